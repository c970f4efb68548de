"""Exports: a check's results back into the study on the PACS (SR, text SR, GSPS)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from app.api.deps import DbDep, Reader, Requester, SessionDep, SettingsDep
from app.api.errors import ErrorBody
from app.api.schemas import ExportOut, IdPath
from app.services.exports import get_export, list_exports, request_export

router = APIRouter(tags=["exports"])


@router.post(
    "/checks/{job_id}/export",
    response_model=ExportOut,
    status_code=202,
    summary="Send a check's results to the configured PACS (TID 1500 SR, text SR, GSPS)",
    description="Queues an export to RADCHECK_EXPORT__DESTINATION (202); a worker builds and "
    "sends it, retrying on failure. An export of this check still queued or running is returned "
    "(200) instead of a second one. Each export is a new series; it supersedes the study's previous "
    "export (Predecessor Documents Sequence). 409: the check has not succeeded, checked no image, "
    "or export is not configured.",
    responses={200: {"model": ExportOut}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)
def post_export(
    job_id: IdPath, db: DbDep, principal: Requester, settings: SettingsDep, response: Response
) -> ExportOut:
    def work(session: Session) -> tuple[ExportOut, bool]:
        row, created = request_export(
            session,
            check_job_id=job_id,
            actor=principal.actor,
            export=settings.export,
            pacs=settings.pacs,
        )
        session.flush()
        session.refresh(row)
        return ExportOut.model_validate(row), created

    out, created = db.run(work)
    if not created:
        response.status_code = 200
    return out


@router.get(
    "/checks/{job_id}/exports",
    response_model=list[ExportOut],
    summary="The exports of a check, oldest first, with status, attempts and last error",
    responses={404: {"model": ErrorBody}},
)
def get_check_exports(job_id: IdPath, session: SessionDep, principal: Reader) -> list[ExportOut]:
    return [ExportOut.model_validate(row) for row in list_exports(session, job_id)]


@router.get(
    "/exports/{export_id}",
    response_model=ExportOut,
    summary="One export: status, attempts, last error and the objects sent",
    responses={404: {"model": ErrorBody}},
)
def get_one_export(export_id: IdPath, session: SessionDep, principal: Reader) -> ExportOut:
    return ExportOut.model_validate(get_export(session, export_id))
