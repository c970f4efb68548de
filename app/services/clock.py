"""One clock for leases and quiet periods: the database's, so that hosts with drifting clocks agree."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import utcnow

__all__ = ["db_now"]


def db_now(session: Session) -> datetime:
    """The database server's current time on PostgreSQL (shared by every API host and worker).

    SQLite is embedded in one host, whose clock is the only one: it uses that.
    """
    if session.get_bind().dialect.name != "postgresql":
        return utcnow()
    now = session.scalar(select(func.now()))
    if not isinstance(now, datetime):
        raise TypeError(f"the database returned {now!r} for now()")
    return now.astimezone(UTC)
