"""Report versions: what changed between two versions of a study's report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ReadAuditDep, Reader, SessionDep
from app.api.errors import ErrorBody
from app.api.people_schemas import ReportDiffOut, SectionDiff
from app.api.schemas import MAX_ID, UidPath
from app.services.report_diff import diff_reports

router = APIRouter(prefix="/studies", tags=["studies"])

VersionQ = Annotated[int | None, Query(ge=1, le=MAX_ID)]


@router.get(
    "/{study_uid}/report-diff",
    response_model=ReportDiffOut,
    summary="Section-by-section changes between two report versions (default: latest vs previous)",
    responses={404: {"model": ErrorBody}},
)
def get_report_diff(
    study_uid: UidPath,
    session: SessionDep,
    principal: Reader,
    reads: ReadAuditDep,
    from_version: VersionQ = None,
    to_version: VersionQ = None,
) -> ReportDiffOut:
    a, b, sections, study_id = diff_reports(
        session, study_uid=study_uid, from_version=from_version, to_version=to_version
    )
    reads.add(actor=principal.actor, action="report.diff", study_id=study_id, object_type="report")
    return ReportDiffOut(
        from_version=a, to_version=b, sections=[SectionDiff(**s) for s in sections]
    )
