"""Slow and greedy clients at the connection level (issue 16 item 3), below ASGI.

uvicorn has no header or body read timeout and no per-peer connection bound: a client that sends
half a request line and stalls holds its connection (and file descriptor) for ever, and one peer
can open thousands. ``guarded_protocol(limits)`` is uvicorn's HTTP protocol class (httptools) with

- a **header timeout**: a request's line and headers must be complete within ``header_timeout_s``
  of their first byte (of the connection, for the first request); else 408 and close. The clock
  is not reset by more bytes, so a client dripping one byte a second gains nothing;
- a **read timeout**: while a request body is being received, a gap of ``read_timeout_s`` without
  a byte closes the connection (the route sees a disconnect). Not while the server itself paused
  reading (a slow consumer is not the client's fault);
- a **per-peer bound**: a peer address with ``max_connections_per_peer`` open connections gets
  503 (``Retry-After: 1``) and close on the next one; one WARNING per peer per minute.

Idle keep-alive connections are closed by uvicorn's own ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ConnectionLimits", "GuardedHttpProtocol", "guarded_protocol"]

_LOG = logging.getLogger(__name__)
_WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on each connection; ``max_connections_per_peer`` 0 means no bound."""

    header_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    max_connections_per_peer: int = 64


def _response(status: str, detail: str, kind: str, extra: str = "") -> bytes:
    body = json.dumps({"type": kind, "detail": detail, "request_id": None}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the class (see ``guarded_protocol``)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    open_per_peer: ClassVar[Counter[str]] = Counter()
    warned_at: ClassVar[dict[str, float]] = {}

    _header_timer: asyncio.TimerHandle | None = None
    _read_timer: asyncio.TimerHandle | None = None
    _peer: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        limit = self.limits.max_connections_per_peer
        if peer is not None and limit and self.open_per_peer[peer] >= limit:
            self._refuse_peer(peer, limit)
            return
        if peer is not None:
            self._peer = peer
            self.open_per_peer[peer] += 1
        self._arm_header_timer()

    def _refuse_peer(self, peer: str, limit: int) -> None:
        now = time.monotonic()
        if now - self.warned_at.get(peer, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self.warned_at[peer] = now
            _LOG.warning(
                "refused a connection from %s: it already has %d open "
                "(RADCHECK_API__MAX_CONNECTIONS_PER_PEER)",
                peer,
                limit,
            )
        self.transport.write(
            _response(
                "503 Service Unavailable",
                f"too many open connections from your address (limit {limit}, "
                "RADCHECK_API__MAX_CONNECTIONS_PER_PEER): close some and retry",
                "too_many_connections",
                "retry-after: 1\r\n",
            )
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._peer is not None:
            self.open_per_peer[self._peer] -= 1
            if self.open_per_peer[self._peer] <= 0:
                del self.open_per_peer[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between_requests = self.cycle is None or self.cycle.response_complete
        if between_requests and self._header_timer is None:
            self._arm_header_timer()  # the first byte of a keep-alive connection's next request
        super().data_received(data)
        self._arm_read_timer()

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._header_timed_out
            )

    def _arm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._receiving_body() and not self.transport.is_closing():
            self._read_timer = self.loop.call_later(
                self.limits.read_timeout_s, self._read_timed_out
            )

    def _receiving_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_complete

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._read_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(
                _response(
                    "408 Request Timeout",
                    f"the request line and headers did not arrive within "
                    f"{self.limits.header_timeout_s:g} s (RADCHECK_API__HEADER_TIMEOUT_S)",
                    "request_timeout",
                )
            )
        self.transport.close()

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self._receiving_body() or self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading, not the client: wait again
            self._arm_read_timer()
            return
        _LOG.info(
            "closed a connection from %s: no body bytes for %g s (RADCHECK_API__READ_TIMEOUT_S)",
            self._peer or "-",
            self.limits.read_timeout_s,
        )
        self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with ``limits`` and its own peer counts."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"limits": limits, "open_per_peer": Counter(), "warned_at": {}},
    )
