"""Feedback for the team: accepted vs dismissed flags per rule and per subtype (JSON or CSV)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from app.api.deps import DbDep, Radiologist, SessionDep
from app.api.people_schemas import FeedbackOut, FeedbackRow
from app.services import audit
from app.services.feedback import feedback_csv, feedback_stats

router = APIRouter(prefix="/feedback", tags=["feedback"])

DateQ = Annotated[date | None, Query(description="Flags created on or after/before (YYYY-MM-DD)")]


@router.get(
    "/stats", response_model=FeedbackOut, summary="Accept/dismiss counts per rule and subtype"
)
def get_stats(
    session: SessionDep, principal: Radiologist, date_from: DateQ = None, date_to: DateQ = None
) -> FeedbackOut:
    stats = feedback_stats(session, date_from=date_from, date_to=date_to)
    return FeedbackOut(
        by_rule=[FeedbackRow(**r) for r in stats["by_rule"]],
        by_subtype=[FeedbackRow(**r) for r in stats["by_subtype"]],
        date_from=date_from.isoformat() if date_from else None,
        date_to=date_to.isoformat() if date_to else None,
    )


@router.get(
    "/stats.csv",
    response_class=Response,
    summary="The same statistics as CSV (audited as an export)",
    responses={200: {"content": {"text/csv": {}}}},
)
def get_stats_csv(
    db: DbDep, principal: Radiologist, date_from: DateQ = None, date_to: DateQ = None
) -> Response:
    def export(
        session: Session,
    ) -> dict[str, list[dict[str, Any]]]:  # a write (the audit row): a transaction
        audit.record(
            session,
            actor=principal.actor,
            action="feedback.exported",
            object_type="feedback",
            details={"date_from": str(date_from), "date_to": str(date_to)},
        )
        return feedback_stats(session, date_from=date_from, date_to=date_to)

    stats = db.run(export)
    return Response(
        feedback_csv(stats),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="radcheck-feedback.csv"'},
    )
