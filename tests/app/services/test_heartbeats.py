"""Worker heartbeats: what the health check and ``radcheck worker --check`` read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db.models import WorkerHeartbeat
from app.db.session import Database
from app.services.clock import db_now
from app.services.heartbeats import record_worker_heartbeat, worker_alive
from app.settings import Settings


@pytest.fixture
def db(settings: Settings) -> Database:
    return Database(settings.database_url)


def test_worker_alive_reads_the_heartbeat_window(db: Database) -> None:
    """A heart-beat counts only inside the window, and only for the host asked about."""
    with db.session() as session:
        assert not worker_alive(session, within=timedelta(hours=1))
        record_worker_heartbeat(session, worker_id="w-1")
    with db.session() as session:
        row = session.get(WorkerHeartbeat, "w-1")
        assert row is not None
        row.last_seen_at = db_now(session) - timedelta(minutes=10)
    with db.session() as session:
        assert worker_alive(session, within=timedelta(hours=1))
        assert not worker_alive(session, within=timedelta(minutes=5))
        assert not worker_alive(session, within=timedelta(hours=1), hostname="other-host")
