"""A radiologist's decision on a flag (accept or dismiss, with a comment), always audited."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import DismissReason, Flag, Review, ReviewDecision
from app.services import audit
from app.services.errors import InvalidInputError, NotFoundError
from app.services.worklist import lock_study, refresh_worklist_row

__all__ = ["review_flag", "review_history"]


def review_flag(
    session: Session,
    *,
    flag_id: int,
    decision: ReviewDecision,
    comment: str | None,
    actor: str,
    reason: DismissReason | None = None,
) -> Review:
    """Record a decision; a later decision supersedes an earlier one, and both stay in the history."""
    flag = session.get(Flag, flag_id)
    if flag is None:
        raise NotFoundError(f"No flag {flag_id}.")
    if reason is not None and decision is not ReviewDecision.DISMISSED:
        raise InvalidInputError(
            f"A reason ({reason.value!r}) goes with a dismissal only: drop it to accept the flag."
        )
    if reason is DismissReason.OTHER and not (comment or "").strip():
        raise InvalidInputError("Reason 'other' needs a comment saying why the flag is dismissed.")
    lock_study(session, flag.study_id)  # before any write: see lock_study for the order
    review = Review(
        flag_id=flag.id,
        decision=decision.value,
        comment=comment,
        reviewer=actor,
        reason=reason.value if reason is not None else None,
    )
    session.add(review)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"flag.{decision.value}",
        study_id=flag.study_id,
        object_type="flag",
        object_id=flag.id,
        details={
            "review_id": review.id,
            "subtype": flag.subtype,
            "rule_id": flag.rule_id,
            "reason": review.reason,
        },
    )
    refresh_worklist_row(session, flag.study_id)
    return review


def review_history(session: Session, flag_id: int) -> list[Review]:
    """Every decision on a flag, oldest first (the last one is the current decision)."""
    if session.get(Flag, flag_id) is None:
        raise NotFoundError(f"No flag {flag_id}.")
    return list(
        session.scalars(select(Review).where(Review.flag_id == flag_id).order_by(Review.id))
    )
