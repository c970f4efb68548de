"""Studies: list with filters, details with images, report versions, checks and flags; report intake."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.deps import DbDep, Integrator, ReadAuditDep, Reader, SettingsDep, read_in_thread
from app.api.errors import ErrorBody
from app.api.schemas import (
    MAX_ID,
    CheckOut,
    GroundingOut,
    ReportIn,
    ReportOut,
    StudyDetail,
    StudyPage,
    StudySummary,
    UidPath,
    boxes_of,
)
from app.db.models import StudyStatus
from app.services.groundings import heatmap_url
from app.services.queries import Row, StudyFilter, list_studies, read_study
from app.services.reports import ReportSubmission, submit_report

router = APIRouter(prefix="/studies", tags=["studies"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}}


def check_out(job: Row) -> CheckOut:
    """A check as read by ``app.services.queries`` (flags with reviews, groundings)."""
    return CheckOut.model_validate(
        {
            **job,
            "flags": [
                {
                    **flag,
                    "verification_status": "reviewed" if flag["reviews"] else "unverified",
                    "boxes": boxes_of(flag["evidence"]),
                }
                for flag in job["flags"]
            ],
            "groundings": [grounding_out(g) for g in job["groundings"]],
        }
    )


def grounding_out(row: Row) -> GroundingOut:
    relevance_map = row["status"] != "failed" and row["source"] == "relevance"
    return GroundingOut.model_validate(
        {
            **row,
            "heatmap_url": heatmap_url(row["check_job_id"], row["id"]) if relevance_map else None,
        }
    )


def study_detail(study: Row) -> StudyDetail:
    return StudyDetail.model_validate(
        {
            **study,
            "images": [
                {
                    **image,
                    "eligible_for_model": image["eligible"],
                    "reasons": image["eligibility_reasons"],
                }
                for image in study["images"]
            ],
            "checks": [check_out(job) for job in study["checks"]],
        }
    )


@router.get("", response_model=StudyPage, summary="List studies (newest first)")
async def studies(
    db: DbDep,
    principal: Reader,
    reads: ReadAuditDep,
    status: Annotated[
        StudyStatus | None, Query(description="receiving, complete or checked")
    ] = None,
    has_flags: Annotated[
        bool | None, Query(description="Only studies whose latest check has (or has no) flags")
    ] = None,
    date_from: Annotated[date | None, Query(description="Study date from (YYYY-MM-DD)")] = None,
    date_to: Annotated[date | None, Query(description="Study date to (YYYY-MM-DD)")] = None,
    accession_number: Annotated[str | None, Query(pattern=r"^[^\x00]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> StudyPage:
    flt = StudyFilter(
        status=status.value if status else None,
        has_flags=has_flags,
        date_from=date_from,
        date_to=date_to,
        accession_number=accession_number,
        limit=limit,
        offset=offset,
    )
    items, total = await read_in_thread(db, lambda session: list_studies(session, flt))
    reads.add(actor=principal.actor, action="studies.list", object_type="study")
    return StudyPage(
        items=[StudySummary(**item) for item in items], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{study_uid}",
    response_model=StudyDetail,
    summary="A study with its images, report versions, checks and flags",
    responses=NOT_FOUND,
)
async def study(
    study_uid: UidPath, db: DbDep, principal: Reader, reads: ReadAuditDep
) -> StudyDetail:
    found = await read_in_thread(db, lambda session: read_study(session, study_uid))
    reads.add(actor=principal.actor, action="study.read", study_id=found["id"], object_type="study")
    return study_detail(found)


@router.post(
    "/{study_uid}/reports",
    response_model=ReportOut,
    status_code=201,
    summary="Submit the study's report (a new version each time)",
    responses={**NOT_FOUND, 413: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
def post_report(
    study_uid: UidPath, body: ReportIn, db: DbDep, principal: Integrator, settings: SettingsDep
) -> ReportOut:
    submission = ReportSubmission(**body.model_dump())
    max_chars = settings.checks.max_report_chars
    report = db.run(
        lambda session: submit_report(
            session,
            study_uid=study_uid,
            submission=submission,
            actor=principal.actor,
            max_chars=max_chars,
        )
    )
    return ReportOut.model_validate(report)
