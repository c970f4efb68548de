"""The one lease contract (app.services.leases), on a PACS retrieval row, the simplest leased kind.

Check jobs and exports are claimed through the same functions; tests/app/services/test_jobs.py,
test_exports.py and test_pacs_retrieve.py test each kind's runnable conditions on top."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import or_
from sqlalchemy.orm import Session

from app.db.models import JobStatus, PacsRetrieval
from app.db.session import Database
from app.services import leases
from app.services.clock import db_now
from app.settings import Settings

LEASE = timedelta(minutes=5)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings.database_url)
    yield database
    database.dispose()


def _queued(db: Database) -> int:
    with db.session() as session:
        row = PacsRetrieval(
            node="pacs", method="dicomweb", status=JobStatus.QUEUED, requested_by="test", studies=[]
        )
        session.add(row)
        session.flush()
        return row.id


def _claim(session: Session, worker_id: str, lease: timedelta = LEASE) -> int | None:
    now = db_now(session)
    runnable = or_(PacsRetrieval.status == JobStatus.QUEUED, leases.expired(PacsRetrieval, now))
    return leases.claim(
        session, PacsRetrieval, runnable=runnable, worker_id=worker_id, lease=lease, now=now
    )


def _renew(session: Session, row_id: int, worker_id: str) -> bool:
    return leases.renew(
        session,
        PacsRetrieval,
        row_id=row_id,
        worker_id=worker_id,
        lease=LEASE,
        values={"stored": 3},
    )


def _abandon(session: Session, *, max_attempts: int) -> list[PacsRetrieval]:
    now = db_now(session)
    return leases.abandon_exhausted(
        session,
        PacsRetrieval,
        stale=leases.expired(PacsRetrieval, now),
        exhausted=PacsRetrieval.attempts >= max_attempts,
        now=now,
    )


def test_a_row_is_taken_once_and_again_only_after_its_lease_expires(db: Database) -> None:
    row_id = _queued(db)
    with db.session() as session:
        assert _claim(session, "a", lease=timedelta(seconds=-1)) == row_id  # "a" dies at once
    with db.session() as session:
        assert _claim(session, "b") == row_id
    with db.session() as session:
        assert _claim(session, "c") is None  # "b" holds it
        row = session.get(PacsRetrieval, row_id)
        assert row is not None
        assert (row.status, row.attempts, row.lease_owner) == (JobStatus.RUNNING, 2, "b")


def test_only_the_holder_renews_writes_and_releases(db: Database) -> None:
    row_id = _queued(db)
    with db.session() as session:
        assert _claim(session, "a") == row_id
    with db.session() as session:
        assert not _renew(session, row_id, "b")
        assert leases.held(session, PacsRetrieval, row_id, "b") is None
        assert _renew(session, row_id, "a")
    with db.session() as session:
        row = leases.held(session, PacsRetrieval, row_id, "a")
        assert row is not None and row.stored == 3
        leases.release(row)
    with db.session() as session:
        row = session.get(PacsRetrieval, row_id)
        assert row is not None and row.lease_owner is None and row.lease_expires_at is None
        assert not leases.holds(row, "a")


def test_stale_rows_without_attempts_left_are_failed_and_released(db: Database) -> None:
    row_id = _queued(db)
    with db.session() as session:
        assert _claim(session, "a", lease=timedelta(seconds=-1)) == row_id
    with db.session() as session:
        assert _abandon(session, max_attempts=2) == []  # one attempt so far: it may run again
        assert [row.id for row in _abandon(session, max_attempts=1)] == [row_id]
    with db.session() as session:
        row = session.get(PacsRetrieval, row_id)
        assert row is not None and row.status == JobStatus.FAILED and row.finished_at is not None
        assert row.lease_owner is None and _claim(session, "b") is None
