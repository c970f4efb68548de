"""The append-only audit trail: who read, checked, reviewed or exported which study."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db.models import AuditEvent

__all__ = ["record"]


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    study_id: int | None = None,
    object_type: str | None = None,
    object_id: str | int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one audit event to the caller's unit of work (no PHI in ``details``)."""
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            study_id=study_id,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            details=details or {},
        )
    )
