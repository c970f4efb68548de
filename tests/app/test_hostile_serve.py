"""Hostile clients at the server level (issue 16 items 3 and 9): the model server's bind and
access log, and ``radcheck serve``'s timeouts and per-peer connection bound; real servers on
loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.app.serve_support import (
    PARTIAL,
    connect_from,
    free_port,
    read_until_closed,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
MODEL_KEY = "model-server-key-" + "m" * 24
SECRET = "query-secret-" + "q" * 24


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


# --- 16.3: ``radcheck serve`` drops slow clients and bounds connections per peer --------------

API = "/api/v1"


class Serve:
    """``radcheck serve --no-ui --no-worker --migrate`` (SQLite) in its own process."""

    def __init__(self, root: Path, **api: object) -> None:
        root.mkdir()
        self.root, self.port, self.log = root, free_port(), root / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
        env |= {"PYTHONPATH": str(REPO), "RADCHECK_STORAGE__DATA_DIR": str(root / "data")}
        env |= {f"RADCHECK_API__{k.upper()}": str(v) for k, v in api.items()}
        with self.log.open("wb") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--no-ui", "--no-worker", "--migrate",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=root, stdout=handle, stderr=handle,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    def wait(self) -> None:
        wait_for(f"{self.url}/health", self.proc, self.log)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)


def test_half_sent_requests_are_closed_in_bounded_time_and_the_server_still_answers(
    tmp_path: Path,
) -> None:
    header_timeout_s = read_timeout_s = 2.0
    server = Serve(
        tmp_path / "slow", header_timeout_s=header_timeout_s, read_timeout_s=read_timeout_s
    )
    try:
        server.wait()
        # 500 connections that send half a request and stall, from 10 addresses (50 each, under
        # the per-peer bound of 64, so only the header timeout can close them)
        socks = []
        for i in range(500):
            sock = connect_from(f"127.0.0.{10 + i % 10}", server.port)
            sock.sendall(PARTIAL)
            socks.append(sock)
        sent = time.monotonic()
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
        deadline = sent + header_timeout_s + 60  # generous for a loaded machine; was: never
        answers = [read_until_closed(sock, deadline) for sock in socks]
        closed_after = time.monotonic() - sent
        for sock in socks:
            sock.close()
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
        assert b"RADCHECK_API__HEADER_TIMEOUT_S" in answers[0]
        assert closed_after >= header_timeout_s * 0.9  # closed by the timeout, not at once
        # dripping bytes does not extend the deadline
        drip = connect_from("127.0.0.1", server.port)
        drip.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
        started = time.monotonic()
        while time.monotonic() - started < header_timeout_s + 30:
            try:
                drip.sendall(b"X-A: b\r\n")
            except OSError:
                break
            time.sleep(0.2)
        assert read_until_closed(drip, time.monotonic() + 30).startswith(b"HTTP/1.1 408 ")
        drip.close()
        # a body that stalls (the public login route reads it) is dropped after the read timeout
        stalled = connect_from("127.0.0.1", server.port)
        stalled.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: radcheck\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"user'
        )
        started = time.monotonic()
        read_until_closed(stalled, started + read_timeout_s + 60)
        assert time.monotonic() - started >= read_timeout_s * 0.9
        stalled.close()
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
        assert "no body bytes for 2 s" in server.log.read_text(errors="replace")
    finally:
        server.stop()


def test_connections_per_peer_are_bounded_and_the_bound_recovers(tmp_path: Path) -> None:
    limit = 4
    server = Serve(tmp_path / "peer", max_connections_per_peer=limit, header_timeout_s=120)
    try:
        server.wait()
        held = [connect_from("127.0.0.3", server.port) for _ in range(limit)]
        for sock in held:
            sock.sendall(PARTIAL)
        # the next connection from that address is refused at once (the server speaks first)
        excess = connect_from("127.0.0.3", server.port)
        answer = read_until_closed(excess, time.monotonic() + 30)
        excess.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:80]
        assert b"RADCHECK_API__MAX_CONNECTIONS_PER_PEER" in answer and b"retry-after: 1" in answer
        # another address is not affected
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"))
        assert other.get(f"{server.url}/health", timeout=30).status_code == 200
        # closing one frees a place: the peer is served again
        held.pop().close()
        client = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.get(f"{server.url}/health", timeout=30).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the peer was not served after closing one"
            time.sleep(0.1)
        client.close()
        other.close()
        for sock in held:
            sock.close()
        assert "refused a connection from 127.0.0.3" in server.log.read_text(errors="replace")
    finally:
        server.stop()
