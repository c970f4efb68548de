"""Faults: the database going away mid-traffic answers 503 (never 500) and the API recovers.

PostgreSQL is made to go away for this test's database only (others share the server): new
connections are refused (ALLOW_CONNECTIONS false) and every open one is terminated, which is what
a restart or failover looks like to the API. SQLite is a file in the API's own process, so it has
no such failure mode.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from tests.app.api_support import API, upload
from tests.app.conftest import auth, make_settings
from tests.conftest import PG_ADMIN_URL


def set_available(name: str, available: bool) -> None:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(available).lower()}'))
        if not available:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
    admin.dispose()


@pytest.mark.integration
def test_database_going_away_answers_503_and_recovers(
    pg_url: str, tmp_path: Path, rg1_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", pg_url, in_process=False)
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="pacs", role="integration")
    db.dispose()
    name = sa.engine.make_url(pg_url).database
    assert name
    statuses: Counter[int] = Counter()
    stop = threading.Event()
    with TestClient(create_app(settings)) as client:
        assert upload(client, key, rg1_path).status_code == 201
        uid = client.get(f"{API}/studies", headers=auth(key)).json()["items"][0][
            "study_instance_uid"
        ]

        def traffic() -> None:  # reads in flight while the database goes away and comes back
            while not stop.is_set():
                statuses[client.get(f"{API}/studies/{uid}", headers=auth(key)).status_code] += 1

        reader = threading.Thread(target=traffic)
        reader.start()
        try:
            set_available(name, False)
            down = client.get(f"{API}/studies", headers=auth(key))
            assert down.status_code == 503, down.text
            body = down.json()
            assert body["type"] == "unavailable" and "Retry in a few seconds" in body["detail"]
            assert down.headers["Retry-After"] == "2"
            report = {"findings": "No pneumothorax.", "impression": "Normal."}
            write = client.post(f"{API}/studies/{uid}/reports", json=report, headers=auth(key))
            assert write.status_code == 503
        finally:
            set_available(name, True)
        deadline = time.monotonic() + 60
        while client.get(f"{API}/studies", headers=auth(key)).status_code != 200:
            assert time.monotonic() < deadline, (
                "the API did not recover after the database returned"
            )
            time.sleep(0.1)
        stop.set()
        reader.join(timeout=60)
        write = client.post(f"{API}/studies/{uid}/reports", json=report, headers=auth(key))
        assert write.status_code == 201 and write.json()["version"] == 1  # the 503 wrote nothing
    assert set(statuses) <= {200, 503}, statuses  # never a 500, whatever the timing
    assert statuses[200] > 0
