"""Exports: a check's results sent back into the study on the PACS (docs/pacs-results.md).

An export is a database job like a check: requested (by the API, when a check completes, or when a
radiologist accepts a flag, per ``RADCHECK_EXPORT__MODE``), claimed under a lease by a worker, built
(``dicom_io.build_result_objects``: TID 1500 SR, text SR, GSPS) and sent by STOW-RS or C-STORE.
The object UIDs are fixed at request time, so a retry re-sends the same objects. A failed attempt
keeps its error and is retried after a back-off, up to ``max_attempts``; then the export is failed
(error kept; request a new export to try again). Every request, success and failure is audited.

Re-checks: each export is a new series; its SRs list the previous successful export of the same
study to the same destination in the Predecessor Documents Sequence.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

import dicom_io
from app.db.models import (
    CheckJob,
    ExportJob,
    ExportStatus,
    Flag,
    Instance,
    JobStatus,
    ReviewDecision,
)
from app.services import audit, leases
from app.services.clock import db_now
from app.services.errors import ConflictError, NotFoundError
from app.settings import ExportMode, ExportSettings, PacsNode, PacsSettings

__all__ = [
    "ExportWork",
    "auto_export",
    "claim_next_export",
    "export_method",
    "finish_export",
    "get_export",
    "list_exports",
    "load_export",
    "request_export",
]

logger = logging.getLogger(__name__)

DEVICE_UID = generate_uid(entropy_srcs=["RadCheck report checker: device observer"])
"""The device observer UID of every RadCheck result object (stable across installs)."""


def _app_version() -> str:
    try:
        return version("radcheck")
    except PackageNotFoundError:
        return "0+unknown"


REPORT_SECTIONS = ("findings", "impression", "indication", "comparison", "technique")


def export_method(export: ExportSettings, node: PacsNode) -> str:
    if export.method != "auto":
        return export.method
    return "stow-rs" if node.has_dicomweb else "c-store"


def _destination(export: ExportSettings, pacs: PacsSettings) -> PacsNode:
    if export.destination is None:
        raise ConflictError(
            "Export is not configured: set RADCHECK_EXPORT__DESTINATION to the name of a "
            "RADCHECK_PACS__NODES entry."
        )
    node = pacs.node(export.destination)
    if node is None:  # settings validation prevents this; keep the message clear anyway
        raise ConflictError(f"Export destination {export.destination!r} is not a configured node.")
    return node


def request_export(
    session: Session,
    *,
    check_job_id: int,
    actor: str,
    export: ExportSettings,
    pacs: PacsSettings,
    trigger: str = "manual",
) -> tuple[ExportJob, bool]:
    """Queue an export of a succeeded check; returns (export, created).

    An export of the same check to the same node that is still queued or running is returned
    instead of a second one.
    """
    job = session.get(CheckJob, check_job_id)
    if job is None:
        raise NotFoundError(f"No check job {check_job_id}.")
    node = _destination(export, pacs)
    if job.status != JobStatus.SUCCEEDED:
        raise ConflictError(
            f"Check job {job.id} is {job.status}: only a succeeded check can be exported "
            f"(wait for it, or retry it with POST /api/v1/checks/{job.id}/retry)."
        )
    if _checked_image_uid(job) is None:
        raise ConflictError(
            f"Check job {job.id} checked no image (see its selection): DICOM results must "
            "reference an image of the study."
        )
    active = session.scalar(
        select(ExportJob).where(
            ExportJob.check_job_id == job.id,
            ExportJob.destination == node.name,
            ExportJob.status.in_([ExportStatus.QUEUED, ExportStatus.RUNNING]),
        )
    )
    if active is not None:
        return active, False
    predecessor = session.scalar(
        select(ExportJob)
        .where(
            ExportJob.study_id == job.study_id,
            ExportJob.destination == node.name,
            ExportJob.status == ExportStatus.SUCCEEDED,
        )
        .order_by(ExportJob.id.desc())
        .limit(1)
    )
    row = ExportJob(
        check_job_id=job.id,
        study_id=job.study_id,
        destination=node.name,
        method=export_method(export, node),
        trigger=trigger,
        status=ExportStatus.QUEUED,
        attempts=0,
        max_attempts=export.max_attempts,
        next_attempt_at=db_now(session),
        uids=asdict(dicom_io.ResultUids.new()),
        objects=[],
        predecessor_id=None if predecessor is None else predecessor.id,
        requested_by=actor,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="export.requested",
        study_id=job.study_id,
        object_type="export_job",
        object_id=row.id,
        details={
            "check_job_id": job.id,
            "destination": node.name,
            "method": row.method,
            "trigger": trigger,
            "predecessor_export_id": row.predecessor_id,
        },
    )
    return row, True


def auto_export(
    session: Session,
    *,
    check_job_id: int,
    export: ExportSettings,
    pacs: PacsSettings,
    event: ExportMode,
    actor: str,
) -> ExportJob | None:
    """Queue an export if ``RADCHECK_EXPORT__MODE`` is ``event``; None when it is not."""
    if export.mode != event or export.destination is None:
        return None
    try:
        with session.begin_nested():
            row, _ = request_export(
                session,
                check_job_id=check_job_id,
                actor=actor,
                export=export,
                pacs=pacs,
                trigger=event.value,
            )
    except ConflictError as exc:  # e.g. no image checked: the review or check still stands
        job = session.get(CheckJob, check_job_id)
        audit.record(
            session,
            actor=actor,
            action="export.skipped",
            study_id=None if job is None else job.study_id,
            object_type="check_job",
            object_id=check_job_id,
            details={"trigger": event.value, "reason": str(exc)[:500]},
        )
        return None
    return row


def list_exports(session: Session, check_job_id: int) -> list[ExportJob]:
    if session.get(CheckJob, check_job_id) is None:
        raise NotFoundError(f"No check job {check_job_id}.")
    return list(
        session.scalars(
            select(ExportJob).where(ExportJob.check_job_id == check_job_id).order_by(ExportJob.id)
        )
    )


def get_export(session: Session, export_id: int) -> ExportJob:
    row = session.get(ExportJob, export_id)
    if row is None:
        raise NotFoundError(f"No export {export_id}.")
    return row


def claim_next_export(session: Session, *, worker_id: str, lease: timedelta) -> int | None:
    """Claim the oldest export that is due (queued and past its back-off, or lease expired)."""
    now = db_now(session)
    runnable = or_(
        and_(ExportJob.status == ExportStatus.QUEUED, ExportJob.next_attempt_at <= now),
        leases.expired(ExportJob, now),
    )
    return leases.claim(
        session, ExportJob, runnable=runnable, worker_id=worker_id, lease=lease, now=now
    )


@dataclass(frozen=True)
class ExportWork:
    """Everything a worker needs to send one export (built from the database, then sent)."""

    export_id: int
    node_name: str
    method: str
    objects: dicom_io.ResultObjects


def _checked_image_uid(job: CheckJob) -> str | None:
    image = (job.provenance or {}).get("image") or {}
    uid = image.get("sop_instance_uid") if isinstance(image, dict) else None
    return uid if isinstance(uid, str) and uid else None


def _box(evidence: dict[str, Any]) -> tuple[float, float, float, float] | None:
    for item in evidence.get("boxes") or []:
        if not isinstance(item, dict) or item.get("space", "original_pixels") != "original_pixels":
            continue
        box = item.get("box")
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box):
            x0, y0, x1, y1 = (float(v) for v in box)
            if x1 > x0 and y1 > y0:
                return x0, y0, x1, y1
    return None


def _sentence(job: CheckJob, flag: Flag) -> str | None:
    if flag.section not in REPORT_SECTIONS or flag.span_start is None or flag.span_end is None:
        return None
    text = getattr(job.report, flag.section) or ""
    return text[flag.span_start : flag.span_end].strip() or None


def _dismissed(flag: Flag) -> bool:
    return bool(flag.reviews) and flag.reviews[-1].decision == ReviewDecision.DISMISSED


def _result_flags(job: CheckJob) -> list[dicom_io.ResultFlag]:
    """The check's flags, less those a radiologist dismissed (latest decision)."""
    out = []
    for flag in job.flags:
        if _dismissed(flag):
            continue
        mention = flag.evidence.get("mention") if isinstance(flag.evidence, dict) else None
        concept = mention.get("concept") if isinstance(mention, dict) else None
        if concept is None and "|" in flag.key:
            concept = flag.key.rsplit("|", 1)[1] or None
            concept = None if concept == "None" else concept
        out.append(
            dicom_io.ResultFlag(
                kind=flag.subtype,
                severity=flag.severity,
                message=flag.message,
                confidence=min(max(flag.confidence, 0.0), 1.0),
                sentence=_sentence(job, flag),
                finding=concept,
                box=_box(flag.evidence or {}),
                identifier=f"RadCheck flag {flag.id}",
                uid=generate_uid(entropy_srcs=[f"radcheck flag {flag.id} of check {job.id}"]),
            )
        )
    return out


def _provenance(job: CheckJob) -> dicom_io.ResultProvenance:
    prov = job.provenance or {}
    checker = prov.get("checker") or {}
    model = checker.get("model_id") or (prov.get("model") or {}).get("backend") or "none"
    prompts = checker.get("prompts") or {}
    parameters = [
        f"check job {job.id}",
        f"pipeline {prov.get('pipeline_version', '?')}",
        f"rules {checker.get('ruleset_version', '?')}",
        f"knowledge base {checker.get('kb_version', '?')}",
        f"model {model}",
    ]
    runtime = checker.get("runtime") or {}
    if isinstance(runtime, dict):
        for key in ("weights_sha256", "weights_hash", "revision"):
            if runtime.get(key):
                parameters.append(f"model {key} {runtime[key]}")
    if isinstance(prompts, dict) and prompts:
        parameters.append(
            "prompts " + ", ".join(f"{k} v{v}" for k, v in sorted(prompts.items()))[:1000]
        )
    return dicom_io.ResultProvenance(
        algorithm_version=_app_version(),
        parameters=tuple(parameters),
        device_uid=DEVICE_UID,
    )


def load_export(
    session: Session, *, export_id: int, files_dir: Path, worker_id: str
) -> ExportWork | None:
    """Build the objects of a claimed export (None if this worker no longer holds it)."""
    row = session.get(ExportJob, export_id)
    if row is None or not leases.holds(row, worker_id):
        return None
    job = row.job
    uid = _checked_image_uid(job)
    instance = session.scalar(select(Instance).where(Instance.sop_instance_uid == uid))
    if instance is None:
        raise dicom_io.ResultsError(
            "the checked image is no longer stored: its results cannot reference it"
        )
    source: Dataset = dcmread(files_dir / instance.storage_path, stop_before_pixels=True)
    predecessors = []
    if row.predecessor_id is not None:
        previous = session.get(ExportJob, row.predecessor_id)
        for obj in previous.objects if previous is not None else []:
            if obj.get("kind") in ("measurement_report", "text_report"):
                predecessors.append(
                    dicom_io.ObjectRef(
                        obj["study_instance_uid"],
                        obj["series_instance_uid"],
                        obj["sop_class_uid"],
                        obj["sop_instance_uid"],
                    )
                )
    objects = dicom_io.build_result_objects(
        source,
        _result_flags(job),
        _provenance(job),
        uids=dicom_io.ResultUids(**row.uids),
        predecessors=predecessors,
    )
    return ExportWork(
        export_id=row.id, node_name=row.destination, method=row.method, objects=objects
    )


def _described(objects: dicom_io.ResultObjects) -> list[dict[str, str]]:
    named = [
        ("measurement_report", objects.measurement_report),
        ("text_report", objects.text_report),
        ("presentation_state", objects.presentation_state),
    ]
    return [
        {
            "kind": kind,
            "study_instance_uid": str(ds.StudyInstanceUID),
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID),
        }
        for kind, ds in named
        if ds is not None
    ]


def finish_export(
    session: Session,
    *,
    export_id: int,
    worker_id: str,
    objects: dicom_io.ResultObjects | None,
    error: str | None,
    backoff_s: float,
) -> bool:
    """Record a send: success, or a failure (retried after a back-off until attempts run out)."""
    row = leases.held(session, ExportJob, export_id, worker_id)
    if row is None:
        return False
    now = db_now(session)
    leases.release(row)
    if objects is not None:
        row.objects = _described(objects)
    details: dict[str, Any] = {
        "check_job_id": row.check_job_id,
        "destination": row.destination,
        "method": row.method,
        "attempt": row.attempts,
    }
    if error is None:
        row.status = ExportStatus.SUCCEEDED
        row.error = None
        row.finished_at = now
        details["sop_instance_uids"] = [o["sop_instance_uid"] for o in row.objects]
        action = "export.succeeded"
    else:
        row.error = error[:4000]
        details["error"] = error[:500]
        if row.attempts >= row.max_attempts:
            row.status = ExportStatus.FAILED
            row.finished_at = now
            action = "export.failed"
        else:
            row.status = ExportStatus.QUEUED
            row.next_attempt_at = now + timedelta(seconds=backoff_s * row.attempts)
            details["next_attempt_at"] = row.next_attempt_at.isoformat()
            action = "export.attempt_failed"
    audit.record(
        session,
        actor=f"worker:{worker_id}",
        action=action,
        study_id=row.study_id,
        object_type="export_job",
        object_id=row.id,
        details=details,
    )
    return True
