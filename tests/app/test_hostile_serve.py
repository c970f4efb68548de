"""Hostile clients at the server level (issue 16 items 3 and 9): the model server's bind and
access log, and ``radcheck serve``'s timeouts and per-peer connection bound; real servers on
loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MODEL_KEY = "model-server-key-" + "m" * 24
SECRET = "query-secret-" + "q" * 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer in {timeout_s} s"
        time.sleep(0.1)


# --- 16.9: the model server never logs query strings ------------------------------------------

# The real ``radcheck model serve`` command (logging, security, uvicorn), with the model itself
# replaced by NullRuntime so no weights are loaded.
_SERVE = """
import sys
import app.cli.model as m
from medvlm.runtime import NullRuntime
m._build_runtime = lambda *args, **kwargs: NullRuntime()
m.model_cli(["serve", "--model", "unused", "--host", "127.0.0.1", "--port", sys.argv[1],
             "--log-level", "DEBUG"])
"""


def test_model_server_access_log_never_writes_query_strings(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "model-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    env |= {"PYTHONPATH": str(REPO), "RADCHECK_MODEL_SERVER_API_KEY": MODEL_KEY}
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(port)], env=env, stdout=handle, stderr=handle
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", proc, log)
        bearer = {"Authorization": f"Bearer {MODEL_KEY}"}
        answers = [
            httpx.get(f"{base}/v1/models?api_key={SECRET}", headers=bearer, timeout=10),
            httpx.get(f"{base}/v1/models?api_key={SECRET}", timeout=10),
            httpx.get(f"{base}/nowhere?token={SECRET}&x=1", headers=bearer, timeout=10),
            httpx.post(f"{base}/v1/chat/completions?key={SECRET}", headers=bearer, json={}),
        ]
        assert [r.status_code for r in answers] == [200, 401, 404, 400]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    # the requests were logged (path and status), the query string never
    assert "GET /v1/models 200" in text and "GET /v1/models 401" in text, text[-3000:]
    assert "GET /nowhere 404" in text and "POST /v1/chat/completions 400" in text
    assert SECRET not in text and "api_key=" not in text and "token=" not in text
    assert MODEL_KEY not in text
