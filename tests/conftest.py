"""Shared fixtures: settings on a temp data dir, a fresh PostgreSQL database, real DICOM files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.orthanc import OrthancServer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
PG_ADMIN_URL = os.environ.get(
    "RADCHECK_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach a model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def rg1_path() -> Path:
    """A real PA chest CR (MONOCHROME1) from pydicom-data."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    assert path is not None, "pydicom-data is a test dependency: pip install pydicom-data"
    return Path(str(path))


def _pg_available() -> str | None:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on 127.0.0.1:5432, dropped afterwards.

    Without PostgreSQL the test skips, unless RADCHECK_TEST_REQUIRE_PG=1 (CI sets it), then it fails.
    """
    import sqlalchemy as sa

    problem = _pg_available()
    if problem is not None:
        if os.environ.get("RADCHECK_TEST_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL is required but unreachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {problem}")
    name = f"radcheck_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancServer]]:
    """Start throw-away Orthanc instances (DICOMweb plugin on) on free loopback ports.

    ``orthanc_factory(aet="PACS", users={"u": "p"}, modalities={"RADCHECK": ("RADCHECK",
    "127.0.0.1", 11112)}, lua_scripts=[path], stable_age_s=2)`` returns a started
    :class:`tests.orthanc.OrthancServer`; every instance is killed at teardown. Without Orthanc the
    test skips, unless RADCHECK_TEST_REQUIRE_ORTHANC=1 (CI sets it), then it fails.
    """
    from tests.orthanc import OrthancServer, orthanc_missing

    problem = orthanc_missing()
    if problem is not None:
        if os.environ.get("RADCHECK_TEST_REQUIRE_ORTHANC") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    started: list[OrthancServer] = []

    def start(**kwargs: Any) -> OrthancServer:
        server = OrthancServer(workdir=tmp_path / f"orthanc-{len(started)}", **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., OrthancServer]) -> OrthancServer:
    """One throw-away Orthanc (AE title ORTHANC, no authentication, DICOMweb at /dicom-web)."""
    return orthanc_factory()
