"""Check jobs live in the database: requested by the API, claimed under a lease by workers.

Claiming uses ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL and a conditional UPDATE everywhere
(:mod:`app.services.leases`, shared with exports and PACS retrievals), so two workers never run the
same job at once; a job whose worker died is claimed again once its lease has expired. Results are written only by the lease holder, replacing any earlier flags of the job, so a
re-run never duplicates flags.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import (
    CheckJob,
    Flag,
    Instance,
    JobStatus,
    Report,
    Series,
    Study,
    StudyStatus,
)
from app.services import audit, leases
from app.services.clock import db_now
from app.services.errors import ConflictError, NotFoundError
from app.services.groundings import link_boxes, store_groundings
from app.services.pipeline import CandidateImage, JobInputs, PipelineResult
from app.services.reports import parsed_from_row
from app.services.worklist import lock_study, refresh_worklist_row

__all__ = [
    "claim_next",
    "complete_job",
    "fail_job",
    "load_inputs",
    "renew_lease",
    "request_check",
    "retry_check",
]

logger = logging.getLogger(__name__)


def request_check(
    session: Session, *, study_uid: str, actor: str, max_attempts: int, report_version: int | None
) -> tuple[CheckJob, bool]:
    """Queue a check of the study's latest (or given) report version; returns (job, created).

    A check already queued or running for the same report version is returned instead of a new one.
    """
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise NotFoundError(f"No study with StudyInstanceUID {study_uid!r}.")
    lock_study(session, study.id)  # before any write: see lock_study for the order
    query = select(Report).where(Report.study_id == study.id)
    if report_version is not None:
        query = query.where(Report.version == report_version)
    report = session.scalar(query.order_by(Report.version.desc()).limit(1))
    if report is None:
        detail = f"version {report_version}" if report_version is not None else "report"
        raise NotFoundError(
            f"Study {study_uid!r} has no {detail}: submit one with "
            f"POST /api/v1/studies/{study_uid}/reports first."
        )
    active = session.scalar(
        select(CheckJob).where(
            CheckJob.report_id == report.id,
            CheckJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
    )
    if active is not None:
        return active, False
    job = CheckJob(
        study_id=study.id,
        report_id=report.id,
        status=JobStatus.QUEUED,
        max_attempts=max_attempts,
        requested_by=actor,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:  # a concurrent request queued the same report version first
        active = session.scalar(
            select(CheckJob).where(
                CheckJob.report_id == report.id,
                CheckJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
            )
        )
        if active is None:
            raise
        return active, False
    audit.record(
        session,
        actor=actor,
        action="check.requested",
        study_id=study.id,
        object_type="check_job",
        object_id=job.id,
        details={"report_version": report.version},
    )
    refresh_worklist_row(session, study.id)
    return job, True


def retry_check(session: Session, *, job_id: int, actor: str) -> CheckJob:
    """Put a failed job back in the queue (its previous error goes to the audit trail)."""
    job = session.get(CheckJob, job_id)
    if job is None:
        raise NotFoundError(f"No check job {job_id}.")
    if job.status != JobStatus.FAILED:
        raise ConflictError(
            f"Check job {job_id} is {job.status}; only a failed job can be retried "
            "(request a new check to re-run a finished one)."
        )
    audit.record(
        session,
        actor=actor,
        action="check.retried",
        study_id=job.study_id,
        object_type="check_job",
        object_id=job.id,
        details={"previous_error": job.error, "previous_attempts": job.attempts},
    )
    job.status = JobStatus.QUEUED
    job.attempts = 0
    job.error = None
    leases.release(job)
    job.finished_at = None
    return job


def _abandon_exhausted(session: Session, now: datetime) -> None:
    """Running jobs whose lease expired after their last allowed attempt become failed."""
    for job in leases.abandon_exhausted(
        session,
        CheckJob,
        stale=leases.expired(CheckJob, now),
        exhausted=CheckJob.attempts >= CheckJob.max_attempts,
        now=now,
    ):
        job.error = (
            f"Abandoned after {job.attempts} attempt(s): the worker stopped or timed out each "
            f"time (see the worker logs); retry it with POST /api/v1/checks/{job.id}/retry."
        )
        audit.record(
            session,
            actor="system",
            action="check.failed",
            study_id=job.study_id,
            object_type="check_job",
            object_id=job.id,
            details={"error": "abandoned", "attempts": job.attempts},
        )


def claim_next(
    session: Session, *, worker_id: str, lease: timedelta, quiet_period: timedelta
) -> int | None:
    """Claim for ``worker_id`` the oldest runnable job of a study that has gone quiet (no new
    instance for ``quiet_period``); returns its id or None."""
    now = db_now(session)
    _abandon_exhausted(session, now)
    runnable = or_(
        CheckJob.status == JobStatus.QUEUED,
        and_(leases.expired(CheckJob, now), CheckJob.attempts < CheckJob.max_attempts),
    )
    quiet = (
        select(CheckJob.id)
        .join(Study, Study.id == CheckJob.study_id)
        .where(Study.last_instance_at <= now - quiet_period)
    )
    return leases.claim(
        session, CheckJob, runnable=runnable, among=quiet, worker_id=worker_id, lease=lease, now=now
    )


def renew_lease(session: Session, *, job_id: int, worker_id: str, lease: timedelta) -> bool:
    """Extend the lease; False means this worker no longer owns the job."""
    return leases.renew(session, CheckJob, row_id=job_id, worker_id=worker_id, lease=lease)


def load_inputs(session: Session, *, job_id: int, files_dir: Path) -> JobInputs:
    job = session.get(CheckJob, job_id)
    if job is None:
        raise NotFoundError(f"No check job {job_id}.")
    rows = session.scalars(
        select(Instance)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.study_id == job.study_id)
        .order_by(Series.series_number, Instance.instance_number, Instance.id)
    ).all()
    candidates = tuple(
        CandidateImage(
            sop_instance_uid=row.sop_instance_uid,
            series_instance_uid=row.series.series_instance_uid,
            kind=row.kind,
            attributes=dict(row.attributes),
            header=dict(row.header),
            eligible=row.eligible,
            reasons=tuple(row.eligibility_reasons),
            path=files_dir / row.storage_path,
        )
        for row in rows
    )
    return JobInputs(job_id=job.id, report=parsed_from_row(job.report), candidates=candidates)


def complete_job(session: Session, *, job_id: int, worker_id: str, result: PipelineResult) -> bool:
    """Store the result if this worker still holds the lease; returns False if it lost it."""
    job = leases.held(session, CheckJob, job_id, worker_id)
    if job is None:
        logger.warning("job %s: lease lost before completion; result discarded", job_id)
        return False
    lock_study(session, job.study_id)  # before any write: see lock_study for the order
    session.execute(delete(Flag).where(Flag.check_job_id == job.id))
    grounding_ids = store_groundings(session, job, result.groundings)
    seen: set[str] = set()
    for flag in result.flags:
        if flag.key in seen:
            continue
        seen.add(flag.key)
        session.add(
            Flag(
                check_job_id=job.id,
                study_id=job.study_id,
                key=flag.key[:255],
                subtype=str(flag.subtype),
                complex_class=str(flag.complex_class),
                severity=str(flag.severity),
                source=str(flag.source),
                rule_id=flag.rule_id,
                message=flag.message,
                section=None if flag.section is None else str(flag.section),
                sentence_index=flag.sentence_index,
                span_start=flag.start,
                span_end=flag.end,
                confidence=float(flag.confidence),
                evidence=link_boxes(dict(flag.evidence), job.id, grounding_ids),
            )
        )
    now = db_now(session)
    job.status = JobStatus.SUCCEEDED
    job.error = None
    job.finished_at = now
    leases.release(job)
    job.stage_timings_ms = {k: round(v, 3) for k, v in result.timings_ms.items()}
    job.provenance = result.provenance
    job.selection = result.selection
    job.verdict_simple = result.verdict_simple
    job.verdict_complex = result.verdict_complex
    study = job.study
    if study.status == StudyStatus.COMPLETE or study.last_instance_at <= (job.started_at or now):
        study.status = StudyStatus.CHECKED
    audit.record(
        session,
        actor=f"worker:{worker_id}",
        action="check.completed",
        study_id=job.study_id,
        object_type="check_job",
        object_id=job.id,
        details={"flags": len(seen), "verdict_simple": result.verdict_simple},
    )
    refresh_worklist_row(session, job.study_id)
    return True


def fail_job(session: Session, *, job_id: int, worker_id: str, error: str) -> bool:
    """Mark the job failed with its error, if this worker still holds the lease."""
    job = leases.held(session, CheckJob, job_id, worker_id)
    if job is None:
        return False
    job.status = JobStatus.FAILED
    job.error = error
    job.finished_at = db_now(session)
    leases.release(job)
    audit.record(
        session,
        actor=f"worker:{worker_id}",
        action="check.failed",
        study_id=job.study_id,
        object_type="check_job",
        object_id=job.id,
        details={"error": error[:500]},
    )
    return True
