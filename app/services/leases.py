"""Leases on work rows: the one way check jobs, exports and PACS retrievals are claimed and held.

A worker claims the oldest runnable row by selecting it (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
so concurrent claimers pass over each other) and then taking it with a conditional UPDATE that
repeats the runnable condition, so on SQLite too two workers never hold the same row: the loser's
UPDATE matches nothing. Taking a row counts an attempt, names the worker and sets the lease expiry.
The holder renews the lease while it works; every write it makes checks that it still holds the
row. A row whose worker died is runnable again once its lease has expired; one that has used up
its attempts is abandoned (failed) instead.

What makes a row runnable (queued, past a back-off, lease expired, attempts left) belongs to each
kind of work and is passed in as a SQL condition; :func:`expired` is the common part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, select, update
from sqlalchemy.engine import Result
from sqlalchemy.orm import Session

from app.db.models import CheckJob, ExportJob, JobStatus, PacsRetrieval
from app.services.clock import db_now

__all__ = ["abandon_exhausted", "claim", "expired", "held", "holds", "release", "renew"]

Leased = TypeVar("Leased", CheckJob, ExportJob, PacsRetrieval)
"""A row kind held under a lease (``ExportStatus`` spells its statuses as ``JobStatus`` does)."""

LeasedModel = type[CheckJob] | type[ExportJob] | type[PacsRetrieval]

_RUNNING = JobStatus.RUNNING


def expired(model: LeasedModel, now: datetime) -> ColumnElement[bool]:
    """Running, but its lease ran out before ``now``: the worker holding it stopped."""
    return and_(model.status == _RUNNING, model.lease_expires_at < now)


def claim(
    session: Session,
    model: LeasedModel,
    *,
    runnable: ColumnElement[bool],
    worker_id: str,
    lease: timedelta,
    now: datetime,
    among: Select[int] | None = None,
    reset: Mapping[str, object] | None = None,
) -> int | None:
    """Take the oldest ``runnable`` row (of ``among``, by default all rows) for ``worker_id``.

    The row becomes running with one more attempt, held by ``worker_id`` until ``now + lease``;
    ``reset`` names further columns to set as it is taken. Returns its id, or None when there is
    nothing to take or another worker took it first.
    """
    query = (select(model.id) if among is None else among).where(runnable)
    query = query.order_by(model.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=model)
    row_id = session.scalar(query)
    if row_id is None:
        return None
    taken = session.execute(
        update(model)
        .where(model.id == row_id, runnable)
        .values(
            status=_RUNNING,
            attempts=model.attempts + 1,
            lease_owner=worker_id,
            lease_expires_at=now + lease,
            started_at=now,
            **(reset or {}),
        )
        .execution_options(synchronize_session=False)
    )
    return row_id if _one(taken) else None


def renew(
    session: Session,
    model: LeasedModel,
    *,
    row_id: int,
    worker_id: str,
    lease: timedelta,
    values: Mapping[str, object] | None = None,
) -> bool:
    """Extend the lease (writing ``values`` with it) while ``worker_id`` holds the running row;
    False when it no longer does (nothing is written then)."""
    result = session.execute(
        update(model)
        .where(model.id == row_id, model.status == _RUNNING, model.lease_owner == worker_id)
        .values(lease_expires_at=db_now(session) + lease, **(values or {}))
        .execution_options(synchronize_session=False)
    )
    return _one(result)


def holds(row: CheckJob | ExportJob | PacsRetrieval | None, worker_id: str) -> bool:
    """Is ``row`` running under ``worker_id``'s lease?"""
    return row is not None and row.status == _RUNNING and row.lease_owner == worker_id


def held(session: Session, model: type[Leased], row_id: int, worker_id: str) -> Leased | None:
    """The row, locked (``FOR UPDATE`` on PostgreSQL), if ``worker_id`` still holds it; else None."""
    query = select(model).where(model.id == row_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalar(query)
    return row if holds(row, worker_id) else None


def release(row: CheckJob | ExportJob | PacsRetrieval) -> None:
    """Let go of the row's lease (it has finished, failed or gone back to the queue)."""
    row.lease_owner = None
    row.lease_expires_at = None


def abandon_exhausted(
    session: Session,
    model: type[Leased],
    *,
    stale: ColumnElement[bool],
    exhausted: ColumnElement[bool],
    now: datetime,
) -> list[Leased]:
    """Fail the ``stale`` rows (nobody works on them) that are ``exhausted`` (no attempt left).

    Returns them so the caller can say why on each (``error``) and audit it."""
    rows = list(session.scalars(select(model).where(stale, exhausted)))
    for row in rows:
        row.status = JobStatus.FAILED
        row.finished_at = now
        release(row)
    return rows


def _one(result: Result[Any]) -> bool:
    """Did the UPDATE match exactly one row?"""
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
