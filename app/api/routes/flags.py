"""Radiologist review of a flag."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Radiologist, Reader, SessionDep, SettingsDep
from app.api.errors import ErrorBody
from app.api.people_schemas import ReviewHistoryItem
from app.api.schemas import IdPath, ReviewIn, ReviewOut
from app.db.models import DismissReason, ReviewDecision
from app.services.exports import auto_export
from app.services.reviews import review_flag, review_history
from app.settings import ExportMode

router = APIRouter(prefix="/flags", tags=["flags"])


@router.post(
    "/{flag_id}/reviews",
    response_model=ReviewOut,
    status_code=201,
    summary="Accept or dismiss a flag (dismissal reason, optional comment); the latest decision counts",
    responses={404: {"model": ErrorBody}},
)
def post_review(
    flag_id: IdPath,
    body: ReviewIn,
    session: SessionDep,
    principal: Radiologist,
    settings: SettingsDep,
) -> ReviewOut:
    review = review_flag(
        session,
        flag_id=flag_id,
        decision=ReviewDecision(body.decision),
        comment=body.comment,
        actor=principal.actor,
        reason=DismissReason(body.reason) if body.reason else None,
    )
    if review.decision == ReviewDecision.ACCEPTED:
        auto_export(
            session,
            check_job_id=review.flag.check_job_id,
            export=settings.export,
            pacs=settings.pacs,
            event=ExportMode.AFTER_ACCEPT,
            actor=principal.actor,
        )
    return ReviewOut.model_validate(review)


@router.get(
    "/{flag_id}/reviews",
    response_model=list[ReviewHistoryItem],
    summary="Every decision on a flag, oldest first; the last one is current",
    responses={404: {"model": ErrorBody}},
)
def get_reviews(flag_id: IdPath, session: SessionDep, principal: Reader) -> list[ReviewHistoryItem]:
    rows = review_history(session, flag_id)
    return [
        ReviewHistoryItem.model_validate(r).model_copy(update={"current": i == len(rows) - 1})
        for i, r in enumerate(rows)
    ]
