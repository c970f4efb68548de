"""Instance intake: validate, store the file durably, then record it (idempotent on SOP Instance UID)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import dicom_io
from app.db.models import Instance, Series, Study, StudyStatus, utcnow
from app.services import audit
from app.services.storage import ContentStore

__all__ = ["IngestOutcome", "ingest_instance", "mark_complete_studies"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one received file."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    kind: str
    stored: bool  # False: the same SOP Instance UID was already here (duplicate, kept once)
    eligible: bool
    reasons: tuple[str, ...]


def _get_or_create_study(session: Session, inst: dicom_io.DicomInstance) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == inst.study_instance_uid))
    if study is None:
        study = Study(
            study_instance_uid=inst.study_instance_uid,
            accession_number=inst.accession_number,
            patient_id=inst.patient_id,
            patient_name=inst.patient_name,
            study_date=inst.study_date,
            study_description=inst.study_description,
        )
        session.add(study)
        session.flush()
    return study


def _get_or_create_series(session: Session, study: Study, inst: dicom_io.DicomInstance) -> Series:
    series = session.scalar(
        select(Series).where(Series.series_instance_uid == inst.series_instance_uid)
    )
    if series is None:
        series = Series(
            study_id=study.id,
            series_instance_uid=inst.series_instance_uid,
            series_number=inst.series_number,
            modality=inst.modality,
        )
        session.add(series)
        session.flush()
    return series


def ingest_instance(
    session: Session,
    store: ContentStore,
    data: bytes,
    *,
    actor: str,
    source: str = "upload",
) -> IngestOutcome:
    """Validate ``data`` as DICOM, store it, and add it to its study.

    Raises ``dicom_io.DicomIOError`` for anything that is not a valid DICOM instance. The file is on
    disk (fsynced) before the database row is flushed, so an accepted instance is never lost.
    """
    inst = dicom_io.read_instance(data)
    existing = session.scalar(
        select(Instance).where(Instance.sop_instance_uid == inst.sop_instance_uid)
    )
    reasons = tuple(inst.eligibility.reasons)
    outcome = IngestOutcome(
        sop_instance_uid=inst.sop_instance_uid,
        study_instance_uid=inst.study_instance_uid,
        series_instance_uid=inst.series_instance_uid,
        kind=str(inst.kind),
        stored=existing is None,
        eligible=inst.eligibility.eligible,
        reasons=reasons,
    )
    if existing is not None:
        return outcome
    stored = store.put(data)
    study = _get_or_create_study(session, inst)
    series = _get_or_create_series(session, study, inst)
    now = utcnow()
    row = Instance(
        series_id=series.id,
        sop_instance_uid=inst.sop_instance_uid,
        sop_class_uid=inst.sop_class_uid,
        kind=str(inst.kind),
        instance_number=inst.instance_number,
        transfer_syntax_uid=inst.transfer_syntax_uid,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        storage_path=stored.relative_path,
        attributes=dict(inst.attributes),
        header=inst.header.to_dict(),
        eligible=inst.eligibility.eligible,
        eligibility_reasons=list(reasons),
        source=source,
        received_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # A concurrent request stored the same SOP Instance UID first: one copy is kept.
        return IngestOutcome(**{**outcome.__dict__, "stored": False})
    # A late instance re-opens a study that was already complete or checked.
    study.last_instance_at = now
    study.status = StudyStatus.RECEIVING
    audit.record(
        session,
        actor=actor,
        action="instance.stored",
        study_id=study.id,
        object_type="instance",
        object_id=row.id,
        details={"source": source, "kind": row.kind, "sha256": stored.sha256},
    )
    logger.info("stored instance id=%s study id=%s kind=%s", row.id, study.id, row.kind)
    return outcome


def mark_complete_studies(session: Session, *, quiet_period: timedelta, now: datetime) -> int:
    """Studies with no new instance for the quiet period become complete; returns how many."""
    cutoff = now - quiet_period
    studies = session.scalars(
        select(Study).where(Study.status == StudyStatus.RECEIVING, Study.last_instance_at <= cutoff)
    ).all()
    for study in studies:
        if dicom_io.study_ready(study.last_instance_at, now, quiet_period):
            study.status = StudyStatus.COMPLETE
    return len(studies)
