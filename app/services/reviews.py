"""A radiologist's decision on a flag (accept or dismiss, with a comment), always audited."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.models import Flag, Review, ReviewDecision
from app.services import audit
from app.services.errors import NotFoundError

__all__ = ["review_flag"]


def review_flag(
    session: Session, *, flag_id: int, decision: ReviewDecision, comment: str | None, actor: str
) -> Review:
    flag = session.get(Flag, flag_id)
    if flag is None:
        raise NotFoundError(f"No flag {flag_id}.")
    review = Review(flag_id=flag.id, decision=decision.value, comment=comment, reviewer=actor)
    session.add(review)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=f"flag.{decision.value}",
        study_id=flag.study_id,
        object_type="flag",
        object_id=flag.id,
        details={"review_id": review.id, "subtype": flag.subtype},
    )
    return review
