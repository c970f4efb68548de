"""Radiologist review of a flag."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Radiologist, SessionDep
from app.api.errors import ErrorBody
from app.api.schemas import IdPath, ReviewIn, ReviewOut
from app.db.models import ReviewDecision
from app.services.reviews import review_flag

router = APIRouter(prefix="/flags", tags=["flags"])


@router.post(
    "/{flag_id}/reviews",
    response_model=ReviewOut,
    status_code=201,
    summary="Accept or dismiss a flag, with an optional comment",
    responses={404: {"model": ErrorBody}},
)
def post_review(
    flag_id: IdPath, body: ReviewIn, session: SessionDep, principal: Radiologist
) -> ReviewOut:
    review = review_flag(
        session,
        flag_id=flag_id,
        decision=ReviewDecision(body.decision),
        comment=body.comment,
        actor=principal.actor,
    )
    return ReviewOut.model_validate(review)
