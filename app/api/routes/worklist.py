"""The radiologist's worklist: open flags first (most severe, then oldest), filters, counts, next."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import ReadAuditDep, Reader, SessionDep
from app.api.people_schemas import NextStudyOut, WorklistCounts, WorklistItem, WorklistPage
from app.api.schemas import MAX_ID
from app.db.models import StudyStatus
from app.services.worklist import WorklistFilter, next_unreviewed, worklist

router = APIRouter(prefix="/worklist", tags=["worklist"])

StatusQ = Annotated[StudyStatus | None, Query(description="receiving, complete or checked")]
SeverityQ = Annotated[
    Literal["critical", "warning", "info"] | None,
    Query(description="Only studies with an open flag of this severity"),
]
SubtypeQ = Annotated[
    str | None,
    Query(pattern=r"^[a-z_]{1,32}$", description="Only studies with a flag of this subtype"),
]
ReviewQ = Annotated[
    Literal["reviewed", "unreviewed"] | None,
    Query(description="unreviewed: open flags left; reviewed: flags, all decided"),
]
DateQ = Annotated[date | None, Query(description="Study date (YYYY-MM-DD)")]
AccessionQ = Annotated[str | None, Query(pattern=r"^[^\x00]{1,64}$")]


def _filter(
    status: StudyStatus | None,
    severity: str | None,
    subtype: str | None,
    review: Literal["reviewed", "unreviewed"] | None,
    date_from: date | None,
    date_to: date | None,
    accession_number: str | None,
    limit: int = 50,
    offset: int = 0,
) -> WorklistFilter:
    return WorklistFilter(
        status=status.value if status else None,
        severity=severity,
        subtype=subtype,
        review=review,
        date_from=date_from,
        date_to=date_to,
        accession_number=accession_number,
        limit=limit,
        offset=offset,
    )


@router.get("", response_model=WorklistPage, summary="The worklist, open flags first")
def get_worklist(
    session: SessionDep,
    principal: Reader,
    reads: ReadAuditDep,
    status: StatusQ = None,
    severity: SeverityQ = None,
    subtype: SubtypeQ = None,
    review: ReviewQ = None,
    date_from: DateQ = None,
    date_to: DateQ = None,
    accession_number: AccessionQ = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> WorklistPage:
    flt = _filter(
        status, severity, subtype, review, date_from, date_to, accession_number, limit, offset
    )
    items, counts = worklist(session, flt)
    reads.add(actor=principal.actor, action="worklist.list", object_type="study")
    return WorklistPage(
        items=[WorklistItem(**i) for i in items],
        total=counts["studies"],
        limit=limit,
        offset=offset,
        counts=WorklistCounts(**counts),
    )


@router.get(
    "/next", response_model=NextStudyOut, summary="The next study with open flags (same filters)"
)
def get_next(
    session: SessionDep,
    principal: Reader,
    after: Annotated[str | None, Query(pattern=r"^[0-9A-Za-z._-]{1,64}$")] = None,
    status: StatusQ = None,
    severity: SeverityQ = None,
    subtype: SubtypeQ = None,
    date_from: DateQ = None,
    date_to: DateQ = None,
    accession_number: AccessionQ = None,
) -> NextStudyOut:
    flt = _filter(status, severity, subtype, None, date_from, date_to, accession_number)
    return NextStudyOut(study_instance_uid=next_unreviewed(session, flt, after=after))
