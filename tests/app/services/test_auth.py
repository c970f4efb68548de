"""A revoked API key is refused on the very next request, in every process that checks keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.cli.model import radcheck_key_authorizer
from app.db.session import Database
from app.model_server import create_model_server
from app.services.auth import create_api_key
from app.settings import Settings
from medvlm.runtime import NullRuntime

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RADCHECK_STORAGE__DATA_DIR": str(settings.storage.data_dir),
        "RADCHECK_DATABASE__URL": settings.database_url,
        "RADCHECK_WORKER__IN_PROCESS": "false",
    }


def radcheck(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def api_server(settings: Settings) -> Iterator[str]:
    """``radcheck serve`` as its own process on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, "radcheck serve exited"
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 240, "radcheck serve")  # a busy 2-core machine starts it slowly
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_revoked_key_refused_at_once_by_a_running_api(settings: Settings, api_server: str) -> None:
    key = radcheck(settings, "apikey", "create", "--role", "integration", "--name", "leaky").stdout
    headers = {"X-API-Key": key.strip()}
    for _ in range(3):  # warm: a cache, if there were one, now holds the key
        assert httpx.get(f"{api_server}/api/v1/studies", headers=headers).status_code == 200
    radcheck(settings, "apikey", "revoke", "--name", "leaky")  # another process
    response = httpx.get(f"{api_server}/api/v1/studies", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_model_server_refuses_a_revoked_radcheck_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RADCHECK_DATABASE__URL", settings.database_url)
    monkeypatch.setenv("RADCHECK_STORAGE__DATA_DIR", str(settings.storage.data_dir))
    db = Database(settings.database_url)
    with db.session() as session:
        _, worker_key = create_api_key(session, name="gpu-worker", role="integration")
        _, reader_key = create_api_key(session, name="reader", role="radiologist")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_model_server(NullRuntime(), authorize=radcheck_key_authorizer()),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "model server")
    url = f"http://127.0.0.1:{port}/v1/models"
    try:
        assert httpx.get(url, headers={"Authorization": f"Bearer {worker_key}"}).status_code == 200
        # a radiologist's key is a RadCheck key but not one for the model server
        assert httpx.get(url, headers={"Authorization": f"Bearer {reader_key}"}).status_code == 401
        assert httpx.get(url).status_code == 401
        radcheck(settings, "apikey", "revoke", "--name", "gpu-worker")
        refused = httpx.get(url, headers={"Authorization": f"Bearer {worker_key}"})
        assert refused.status_code == 401
        assert "not revoked" in refused.json()["error"]["message"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.dispose()
