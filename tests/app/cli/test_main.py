"""The `radcheck` command line as a new user runs it (real subprocesses on a temp data directory)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from app.settings import Settings


def radcheck(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    return {**env, "RADCHECK_STORAGE__DATA_DIR": str(data_dir), **extra}


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    done = radcheck(env_for(tmp_path, RADCHECK_API__PORT="eighty"), "db", "upgrade")
    assert done.returncode == 2
    assert "RADCHECK_API__PORT" in done.stderr and "Traceback" not in done.stderr
    done = radcheck(env_for(tmp_path, RADCHECK_MODEL__BACKEND="gpt"), "db", "upgrade")
    assert done.returncode == 2 and "RADCHECK_MODEL__BACKEND" in done.stderr


def test_settings_defaults_and_nested_env(monkeypatch: object, tmp_path: Path) -> None:
    defaults = Settings()
    assert defaults.storage.data_dir == Path("radcheck-data")
    assert defaults.database_url.startswith("sqlite:///") and defaults.database_url.endswith(
        "radcheck-data/radcheck.db"
    )
    assert defaults.model.backend == "none"
    os.environ["RADCHECK_WORKER__LEASE_S"] = "12.5"
    try:
        assert Settings().worker.lease_s == 12.5
    finally:
        del os.environ["RADCHECK_WORKER__LEASE_S"]


def test_apikey_create_prints_once_and_stores_only_a_hash(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    assert radcheck(env, "db", "upgrade").returncode == 0
    done = radcheck(env, "apikey", "create", "--role", "integration", "--name", "ris")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("rck_") and len(key) > 40
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'radcheck.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, role, key_hash FROM api_keys")).all()
    engine.dispose()
    assert [(r.name, r.role) for r in rows] == [("ris", "integration")]
    assert key not in rows[0].key_hash
    db_bytes = (tmp_path / "radcheck.db").read_bytes()
    assert key.encode() not in db_bytes
    dup = radcheck(env, "apikey", "create", "--role", "integration", "--name", "ris")
    assert dup.returncode == 2 and "already exists" in dup.stderr
    bad = radcheck(env, "apikey", "create", "--role", "root", "--name", "x")
    assert bad.returncode == 2 and "admin, integration, radiologist" in bad.stderr
    listed = radcheck(env, "apikey", "list")
    assert "ris\tintegration\tactive" in listed.stdout and key not in listed.stdout


def test_worker_and_serve_refuse_an_outdated_schema(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    for command in (["worker", "--once"], ["serve", "--port", "1"]):
        done = radcheck(env, *command)
        assert done.returncode == 2, done.stderr
        assert "radcheck db upgrade" in done.stderr and "Traceback" not in done.stderr


def test_demo_shows_a_checked_study_with_flags(tmp_path: Path) -> None:
    done = radcheck(env_for(tmp_path), "demo")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "succeeded"
    assert summary["selected_image"]
    assert {f["subtype"] for f in summary["flags"]} >= {"laterality"}
    assert "Unverified AI output" in summary["notice"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_quickstart_serves_health(tmp_path: Path) -> None:
    """The README's run step: `radcheck serve --migrate` on a fresh data dir answers health."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--migrate", "--port", str(port)],
        env=env_for(tmp_path / "fresh"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert status == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/api/v1/ready", timeout=5).json()
        assert ready["status"] == "ready"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_misspelt_or_incomplete_model_settings_fail_at_start(tmp_path: Path) -> None:
    done = radcheck(env_for(tmp_path, RADCHECK_DATABASE_URL="postgresql://x"), "db", "upgrade")
    assert done.returncode == 2 and "RADCHECK_DATABASE_URL: not a RadCheck setting" in done.stderr
    done = radcheck(env_for(tmp_path, RADCHECK_MODEL__BACKEND="transformers"), "worker", "--once")
    assert done.returncode == 2 and "RADCHECK_MODEL__MODEL_DIR" in done.stderr


def test_worker_health_check(tmp_path: Path) -> None:
    # The liveness window is wide: on a loaded machine one CLI start alone can take longer than the
    # default window, and this test checks that --check reads the heart-beat, not the clock.
    env = env_for(tmp_path, RADCHECK_WORKER__ALIVE_AFTER_S="3600")
    assert radcheck(env, "db", "upgrade").returncode == 0
    assert radcheck(env, "worker", "--check").returncode == 1  # no worker ran yet
    assert radcheck(env, "worker", "--once").returncode == 0
    done = radcheck(env, "worker", "--check")
    assert done.returncode == 0 and "worker alive" in done.stdout
