"""Instance intake: validate, store the file durably, then record it (idempotent on SOP Instance UID)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import dicom_io
from app.db.models import Base, Instance, Series, Study, StudyStatus
from app.services import audit
from app.services.clock import db_now
from app.services.errors import InvalidInputError
from app.services.storage import ContentStore, StagedFile
from app.settings import Settings

__all__ = [
    "IngestOutcome",
    "StudyMismatchError",
    "decode_limits",
    "ingest_instance",
    "mark_complete_studies",
]

logger = logging.getLogger(__name__)

Row = TypeVar("Row", bound=Base)


class StudyMismatchError(InvalidInputError):
    """The instance belongs to another study than the one the request named."""


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
    conflict: bool = False  # same SOP Instance UID, different bytes: not stored
    sop_class_uid: str = ""


def _get_or_create(session: Session, model: type[Row], where: Any, values: dict[str, Any]) -> Row:
    """Select-or-insert that tolerates a concurrent insert of the same row (savepoint + re-select)."""
    row = session.scalar(select(model).where(where))
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = model(**values)
            session.add(row)
            session.flush()
        return row
    except IntegrityError:
        row = session.scalar(select(model).where(where))
        if row is None:
            raise
        return row


def ingest_instance(
    session: Session,
    store: ContentStore,
    data: bytes,
    *,
    actor: str,
    source: str = "upload",
    expected_study_uid: str | None = None,
    limits: IngestLimits,
) -> IngestOutcome:
    """Validate ``data`` as DICOM, store it, and add it to its study.

    Raises ``dicom_io.DicomIOError`` for anything that is not a valid DICOM instance. The file is on
    disk (fsynced) before the database row is flushed, so an accepted instance is never lost. The same
    SOP Instance UID with the same bytes is a harmless duplicate; with different bytes it is a
    conflict (``IngestOutcome.conflict``), recorded in the audit trail and not stored. With
    ``expected_study_uid`` (STOW-RS to ``/studies/{study}``), an instance of another study raises
    :class:`StudyMismatchError` and nothing is stored. ``limits`` is required (no default) so every
    way in applies the configured bounds (:func:`decode_limits` of RADCHECK_STORAGE__MAX_INFLATED_BYTES
    and ..._MAX_PIXEL_BYTES); a caller cannot fall back silently to the library's defaults.
    """
    inst = _read(data, limits)
    if expected_study_uid is not None and inst.study_instance_uid != expected_study_uid:
        raise StudyMismatchError(
            f"The instance's StudyInstanceUID {inst.study_instance_uid} is not the study "
            f"{expected_study_uid} named in the request path: send it to /dicomweb/studies "
            "or to its own study."
        )
    digest = hashlib.sha256(data).hexdigest()
    outcome = IngestOutcome(
        sop_instance_uid=inst.sop_instance_uid,
        study_instance_uid=inst.study_instance_uid,
        series_instance_uid=inst.series_instance_uid,
        kind=str(inst.kind),
        stored=True,
        eligible=inst.eligibility.eligible,
        reasons=tuple(inst.eligibility.reasons),
        sop_class_uid=inst.sop_class_uid,
    )
    existing = session.scalar(
        select(Instance).where(Instance.sop_instance_uid == inst.sop_instance_uid)
    )
    if existing is not None:
        return _already_stored(session, store, existing, data, inst, digest, outcome, actor, limits)
    # Two-phase write: the file is staged (written, fsynced) now and moved into place only once
    # this request's row won; a refused or losing upload leaves no file behind.
    staged = store.stage(data, sha256=digest)
    try:
        won = _insert(session, inst, staged, outcome, source)
    except BaseException:
        store.discard(staged)
        raise
    if won is None:
        store.discard(staged)
        # A concurrent request stored the same SOP Instance UID first.
        existing = session.scalar(
            select(Instance).where(Instance.sop_instance_uid == inst.sop_instance_uid)
        )
        if existing is None:
            raise AssertionError("unique violation on sop_instance_uid without a row")
        return _already_stored(session, store, existing, data, inst, digest, outcome, actor, limits)
    study, row = won
    stored = store.commit(staged)
    if stored.created:
        _remove_unless_committed(session, store, stored.relative_path)
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


_PLACED = "radcheck.ingest.placed_files"
"""``session.info`` key: the files put in place for this session's transaction's new rows."""


def _remove_unless_committed(session: Session, store: ContentStore, relative_path: str) -> None:
    """The file put in place for this transaction's new row is removed if the transaction rolls
    back instead of committing (SQLite finding its disk full at COMMIT, the database going away):
    no file is left without a row. Savepoints inside the transaction do not count."""
    placed: list[str] | None = session.info.get(_PLACED)
    if placed is None:
        placed = session.info[_PLACED] = []

        def committed(s: Session) -> None:
            if not s.in_nested_transaction():
                placed.clear()

        def rolled_back(s: Session) -> None:
            if not s.in_nested_transaction():
                for path in placed:
                    store.remove(path)
                placed.clear()

        event.listen(session, "after_commit", committed)
        event.listen(session, "after_rollback", rolled_back)
    placed.append(relative_path)


def _insert(
    session: Session,
    inst: dicom_io.DicomInstance,
    staged: StagedFile,
    outcome: IngestOutcome,
    source: str,
) -> tuple[Study, Instance] | None:
    """Add the study, series and instance rows; None when another request's row won the UID."""
    study = _get_or_create(
        session,
        Study,
        Study.study_instance_uid == inst.study_instance_uid,
        {
            "study_instance_uid": inst.study_instance_uid,
            "accession_number": inst.accession_number,
            "patient_id": inst.patient_id,
            "patient_name": inst.patient_name,
            "study_date": inst.study_date,
            "study_description": inst.study_description,
        },
    )
    series = _get_or_create(
        session,
        Series,
        Series.series_instance_uid == inst.series_instance_uid,
        {
            "study_id": study.id,
            "series_instance_uid": inst.series_instance_uid,
            "series_number": inst.series_number,
            "modality": inst.modality,
        },
    )
    now = db_now(session)
    row = Instance(
        series_id=series.id,
        sop_instance_uid=inst.sop_instance_uid,
        sop_class_uid=inst.sop_class_uid,
        kind=str(inst.kind),
        instance_number=inst.instance_number,
        transfer_syntax_uid=inst.transfer_syntax_uid,
        sha256=staged.sha256,
        size_bytes=staged.size_bytes,
        storage_path=staged.relative_path,
        attributes=dict(inst.attributes),
        header=inst.header.to_dict(),
        eligible=inst.eligibility.eligible,
        eligibility_reasons=list(outcome.reasons),
        source=source,
        received_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return None
    # A late instance re-opens a study that was already complete or checked.
    study.last_instance_at = now
    study.status = StudyStatus.RECEIVING
    return study, row


def _stored_problem(
    store: ContentStore, existing: Instance, limits: dicom_io.DecodeLimits
) -> str | None:
    """Why the stored copy is unusable (missing, truncated, undecodable), or None when it is fine."""
    path = store.path_for(existing.storage_path)
    if not path.exists():
        return "stored file missing"
    try:
        dicom_io.read_instance(path, decode=True, limits=limits)
    except dicom_io.DicomIOError as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def _replace_broken(
    session: Session,
    store: ContentStore,
    existing: Instance,
    data: bytes,
    inst: dicom_io.DicomInstance,
    outcome: IngestOutcome,
    actor: str,
    problem: str,
    limits: dicom_io.DecodeLimits,
) -> IngestOutcome | None:
    """A complete re-send replaces a stored copy found broken; None when the new one is no better."""
    try:
        dicom_io.read_instance(data, decode=True, limits=limits)
    except dicom_io.DicomIOError:
        return None
    old = (existing.sha256, existing.storage_path)
    staged = store.stage(data)
    try:
        existing.sha256 = staged.sha256
        existing.size_bytes = staged.size_bytes
        existing.storage_path = staged.relative_path
        existing.transfer_syntax_uid = inst.transfer_syntax_uid
        existing.attributes = dict(inst.attributes)
        existing.header = inst.header.to_dict()
        existing.eligible = inst.eligibility.eligible
        existing.eligibility_reasons = list(outcome.reasons)
        existing.received_at = db_now(session)
        session.flush()
    except BaseException:
        store.discard(staged)
        raise
    store.commit(staged)
    if old[1] != staged.relative_path:
        store.remove(old[1])
    study = existing.series.study
    study.last_instance_at = existing.received_at
    study.status = StudyStatus.RECEIVING
    audit.record(
        session,
        actor=actor,
        action="instance.replaced",
        study_id=study.id,
        object_type="instance",
        object_id=existing.id,
        details={"stored_sha256": old[0], "received_sha256": staged.sha256, "problem": problem},
    )
    logger.warning("instance id=%s: broken stored copy replaced by a complete re-send", existing.id)
    return outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestLimits(dicom_io.DecodeLimits):
    """Everything ingest judges a received file by: the decode bounds and the site's eligibility
    policy (the rules file's ``eligibility`` list). Every door builds it with :func:`decode_limits`
    from the settings, so a site's edited rules file applies to uploads, STOW-RS, C-STORE and pulls
    alike."""

    eligibility: dicom_io.EligibilityPolicy


@lru_cache(maxsize=8)
def _eligibility(rules_file: Path | None) -> dicom_io.EligibilityPolicy:
    rules = (
        dicom_io.SelectionRules.load(rules_file)
        if rules_file
        else dicom_io.SelectionRules.default()
    )
    return rules.eligibility_policy()


def decode_limits(settings: Settings) -> IngestLimits:
    """The settings' bounds (RADCHECK_STORAGE__MAX_INFLATED_BYTES, ..._MAX_PIXEL_BYTES) and the
    eligibility policy of RADCHECK_INGEST__SELECTION_RULES (the packaged rules when unset; read
    once per process)."""
    return IngestLimits(
        max_inflated_bytes=settings.storage.max_inflated_bytes,
        max_pixel_bytes=settings.storage.max_pixel_bytes,
        eligibility=_eligibility(settings.ingest.selection_rules),
    )


_LIMIT_SETTINGS = {
    "inflated": "RADCHECK_STORAGE__MAX_INFLATED_BYTES",
    "pixel": "RADCHECK_STORAGE__MAX_PIXEL_BYTES",
}


def _read(data: bytes, limits: IngestLimits) -> dicom_io.DicomInstance:
    try:
        return dicom_io.read_instance(data, limits=limits, eligibility=limits.eligibility)
    except dicom_io.LimitExceededError as exc:
        setting = _LIMIT_SETTINGS.get(exc.kind, "RADCHECK_STORAGE__*")
        raise dicom_io.LimitExceededError(
            f"{exc} (setting {setting})", limit=exc.limit, kind=exc.kind
        ) from exc


def _already_stored(
    session: Session,
    store: ContentStore,
    existing: Instance,
    data: bytes,
    inst: dicom_io.DicomInstance,
    digest: str,
    outcome: IngestOutcome,
    actor: str,
    limits: dicom_io.DecodeLimits,
) -> IngestOutcome:
    study_id = existing.series.study_id
    if existing.sha256 == digest:
        audit.record(
            session,
            actor=actor,
            action="instance.duplicate",
            study_id=study_id,
            object_type="instance",
            object_id=existing.id,
        )
        return replace(outcome, stored=False)
    problem = _stored_problem(store, existing, limits)
    if problem is not None:
        replaced = _replace_broken(
            session, store, existing, data, inst, outcome, actor, problem, limits
        )
        if replaced is not None:
            return replaced
    audit.record(
        session,
        actor=actor,
        action="instance.conflict",
        study_id=study_id,
        object_type="instance",
        object_id=existing.id,
        details={"stored_sha256": existing.sha256, "received_sha256": digest},
    )
    return replace(outcome, stored=False, conflict=True)


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
