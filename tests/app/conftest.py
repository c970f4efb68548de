"""App fixtures: settings on a temp dir, a migrated database, API keys, a TestClient; and the small
helpers the app tests share (``auth``, ``make_settings``, ``limits_of``, ``parallel``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from app.services.ingest import IngestLimits, decode_limits
from app.settings import Settings


def make_settings(data_dir: Path, database_url: str | None = None, **worker: object) -> Settings:
    return Settings.model_validate(
        {
            "storage": {"data_dir": data_dir},
            "database": {"url": database_url},
            "worker": {"poll_interval_s": 0.05, "lease_s": 5.0, **worker},
            "ingest": {"quiet_period_s": 0.05},
        }
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on a migrated database: the embedded SQLite default and a real PostgreSQL."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    s = make_settings(tmp_path / "data", url)
    upgrade(s.database_url)
    return s


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path / "data")
    upgrade(s.database_url)
    return s


@pytest.fixture
def keys(settings: Settings) -> dict[str, str]:
    db = Database(settings.database_url)
    out: dict[str, str] = {}
    with db.session() as session:
        for role in ("admin", "integration", "radiologist"):
            _, out[role] = create_api_key(session, name=f"test-{role}", role=role)
    db.dispose()
    return out


@pytest.fixture
def client(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def limits_of(settings: Settings) -> IngestLimits:
    """The configured decode limits and eligibility policy (what ``ingest_instance`` is given)."""
    return decode_limits(settings)


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def parallel(n: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(0..n-1)`` on ``n`` threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# The tiny checkpoint's name as a served model (``--served-model-name``).
TINY_MODEL_ID = "radcheck/tiny-llava-rad"
