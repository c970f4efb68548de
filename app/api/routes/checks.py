"""Check jobs: request, inspect, retry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from app.api.deps import (
    DbDep,
    Integrator,
    ReadAuditDep,
    Requester,
    SessionDep,
    SettingsDep,
    read_in_thread,
)
from app.api.errors import ErrorBody
from app.api.routes.studies import check_out
from app.api.schemas import CheckOut, CheckRequest, IdPath, UidPath
from app.services.jobs import request_check, retry_check
from app.services.queries import read_check

router = APIRouter(tags=["checks"])


@router.post(
    "/studies/{study_uid}/checks",
    response_model=CheckOut,
    status_code=202,
    summary="Request a check of the study's report against its image",
    description="Queues a job (202). If one is already queued or running for that report version, "
    "it is returned (200) instead of a duplicate.",
    responses={200: {"model": CheckOut}, 404: {"model": ErrorBody}},
)
def post_check(
    study_uid: UidPath,
    db: DbDep,
    principal: Requester,
    settings: SettingsDep,
    response: Response,
    body: CheckRequest | None = None,
) -> CheckOut:
    def work(session: Session) -> tuple[CheckOut, bool]:
        job, created = request_check(
            session,
            study_uid=study_uid,
            actor=principal.actor,
            max_attempts=settings.worker.max_attempts,
            report_version=body.report_version if body else None,
        )
        session.flush()
        return check_out(read_check(session, job.id)), created

    out, created = db.run(work)
    if not created:
        response.status_code = 200
    return out


@router.get(
    "/checks/{job_id}",
    response_model=CheckOut,
    summary="A check job with its status, error, timings, provenance and flags",
    responses={404: {"model": ErrorBody}},
)
async def get_check(
    job_id: IdPath, db: DbDep, principal: Requester, reads: ReadAuditDep
) -> CheckOut:
    job = await read_in_thread(db, lambda session: read_check(session, job_id))
    reads.add(
        actor=principal.actor,
        action="check.read",
        study_id=job["study_id"],
        object_type="check_job",
        object_id=job_id,
    )
    return check_out(job)


@router.post(
    "/checks/{job_id}/retry",
    response_model=CheckOut,
    status_code=202,
    summary="Retry a failed check job",
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def post_retry(job_id: IdPath, session: SessionDep, principal: Integrator) -> CheckOut:
    job = retry_check(session, job_id=job_id, actor=principal.actor)
    session.flush()
    return check_out(read_check(session, job.id))
