"""Helpers for tests of real server processes (``radcheck serve``, ``radcheck model serve``) on
loopback: a free port, waiting for a URL, raw connections from a chosen loopback address."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

PARTIAL = b"GET /api/v1/health HTTP/1.1\r\nHost: radcheck\r\nX-Slow: "  # and then nothing


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


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to the server from the loopback address ``source`` (127.0.0.0/8)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)  # no TIME_WAIT pile-up
    return sock


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close the connection in time (got {data[:80]!r})")
