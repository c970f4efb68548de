"""The model server killed in the middle of a generation: the check fails with its error, and a
retry succeeds once the server is back (issue 13.8).

A real ``radcheck model serve`` process (tiny checkpoint of the real architecture; it stands in
for LLaVA-Rad weights) sits behind a loopback relay. The relay passes bytes both ways; when the
first generation request has reached the server, it SIGKILLs the server, so the worker's request
dies mid-generation, exactly as when the process is killed by the OOM killer or a deploy. The API
and its embedded worker run in-process on SQLite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from app.settings import ModelSettings
from tests.app.api_support import REPORT, wait_for_check
from tests.app.conftest import TINY_MODEL_ID, auth, make_settings
from tests.medvlm.test_runtime_helpers import tiny_checkpoint

__all__ = ["tiny_checkpoint"]

REPO = Path(__file__).resolve().parents[3]
API = "/api/v1"
KEY = "killed-model-server-key-" + "k" * 24
GENERATE = b"/chat/completions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ModelServer:
    """``radcheck model serve`` in its own process, on a fixed loopback port."""

    def __init__(self, checkpoint: Path, port: int, log: Path) -> None:
        self.checkpoint, self.port, self.log = checkpoint, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
        env |= {"PYTHONPATH": str(REPO), "RADCHECK_MODEL_SERVER_API_KEY": KEY}
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "model", "serve", "--model", str(self.checkpoint),
                 "--host", "127.0.0.1", "--port", str(self.port),
                 "--served-model-name", TINY_MODEL_ID, "--device", "cpu"],
                env=env, stdout=handle, stderr=handle,
            )  # fmt: skip
        deadline = time.monotonic() + 240  # a cold torch import and model load on a busy machine
        while True:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the model server did not start in 240 s"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


class KillingRelay:
    """Loopback relay to the model server that kills it once, when a generation request arrives."""

    def __init__(self, target_port: int, on_generate: ModelServer) -> None:
        self.target_port, self.server = target_port, on_generate
        self.armed = True
        self.killed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()  # the server is down: the client sees the connection drop
            return
        upstream.settimeout(None)
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        self._pump(client, upstream, watch=True)
        back.join(timeout=5)

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool = False) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
                if watch and self.armed and GENERATE in chunk:
                    self.armed = False
                    time.sleep(0.05)  # the request is on the server: now it is generating
                    self.server.kill()
                    self.killed.set()
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def model_stack(
    tiny_checkpoint: Path, tmp_path: Path
) -> Iterator[tuple[ModelServer, KillingRelay]]:
    server = ModelServer(tiny_checkpoint, free_port(), tmp_path / "model-server.log")
    relay = KillingRelay(server.port, server)
    try:
        yield server, relay
    finally:
        relay.close()
        server.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_model_server_killed_mid_generation_fails_the_job_and_a_retry_succeeds(
    model_stack: tuple[ModelServer, KillingRelay], rg1_path: Path, tmp_path: Path
) -> None:
    server, relay = model_stack
    server.start()
    settings = make_settings(tmp_path / "data", None, max_attempts=1)
    settings.model = ModelSettings.model_validate(
        {
            "backend": "openai",
            "openai_base_url": f"http://127.0.0.1:{relay.port}/v1",
            "openai_model": TINY_MODEL_ID,
            "openai_api_key": KEY,
            "timeout_s": 120,
        }
    )
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="integration", role="integration")
    db.dispose()
    with TestClient(create_app(settings)) as client:
        files = [("files", (rg1_path.name, rg1_path.read_bytes(), "application/dicom"))]
        uploaded = client.post(f"{API}/instances", files=files, headers=auth(key))
        assert uploaded.status_code == 201, uploaded.text
        study = uploaded.json()["accepted"][0]["study_instance_uid"]
        assert (
            client.post(
                f"{API}/studies/{study}/reports", json=REPORT, headers=auth(key)
            ).status_code
            == 201
        )
        job_id = client.post(f"{API}/studies/{study}/checks", headers=auth(key)).json()["id"]
        failed = wait_for_check(client, key, job_id, timeout=300)
        assert relay.killed.is_set(), "the relay never saw a generation request"
        assert failed["status"] == "failed" and failed["attempts"] == 1
        assert failed["error"], failed  # its error is kept, naming what went wrong
        assert "model" in failed["error"].lower() or "connect" in failed["error"].lower()
        assert failed["flags"] == []  # no partial result stored

        server.start()  # back on the same port; the relay now just passes bytes
        retried = client.post(f"{API}/checks/{job_id}/retry", headers=auth(key))
        assert retried.status_code in (200, 202), retried.text
        done = wait_for_check(client, key, job_id, timeout=300)
        assert done["status"] == "succeeded", done.get("error")
        assert done["provenance"]["checker"]["runtime"]["backend"] == "openai"
        assert done["flags"], done  # the rule flag of REPORT, with the model stage run
