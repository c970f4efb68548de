"""Intake status: reports from the RIS waiting for their images, studies waiting for a report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ReadAuditDep, Reader, SessionDep
from app.api.schemas import MAX_ID
from app.services.report_intake import studies_waiting_for_report, waiting_reports

router = APIRouter(prefix="/intake", tags=["intake"])


class WaitingReport(BaseModel):
    """A received HL7 report whose study has not arrived (or could not be attached safely)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    state: str = Field(
        description="waiting (its study has not arrived) or mismatch (a person must look: the "
        "patient identifiers differ, or the accession number matches several studies)"
    )
    detail: str | None
    sender: str = Field(description="MSH-3|MSH-4")
    control_id: str = Field(description="MSH-10")
    source: str = Field(description="mllp or file")
    accession_number: str | None
    study_instance_uid: str | None
    result_status: str = Field(description="P, F, C or X")
    received_at: datetime


class WaitingReportPage(BaseModel):
    items: list[WaitingReport]
    total: int
    limit: int
    offset: int


class WaitingStudy(BaseModel):
    study_instance_uid: str
    accession_number: str | None
    status: str
    images: int
    created_at: datetime
    last_instance_at: datetime


class WaitingStudyPage(BaseModel):
    items: list[WaitingStudy]
    total: int
    limit: int
    offset: int


Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


@router.get(
    "/reports-waiting",
    response_model=WaitingReportPage,
    summary="Reports received from the RIS that wait for their study's images (oldest first)",
)
def reports_waiting(
    session: SessionDep,
    principal: Reader,
    reads: ReadAuditDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> WaitingReportPage:
    rows, total = waiting_reports(session, limit=limit, offset=offset)
    reads.add(actor=principal.actor, action="intake.reports_waiting", object_type="hl7_message")
    return WaitingReportPage(
        items=[WaitingReport.model_validate(r) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/studies-waiting",
    response_model=WaitingStudyPage,
    summary="Studies with images but no report yet (newest first)",
)
def studies_waiting(
    session: SessionDep,
    principal: Reader,
    reads: ReadAuditDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> WaitingStudyPage:
    items, total = studies_waiting_for_report(session, limit=limit, offset=offset)
    reads.add(actor=principal.actor, action="intake.studies_waiting", object_type="study")
    return WaitingStudyPage(
        items=[WaitingStudy(**item) for item in items], total=total, limit=limit, offset=offset
    )
