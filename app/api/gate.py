"""The door, before any route runs (issue 16, items 3 and 10).

- :class:`AuthGate` resolves the credential of every non-public request before its body is read:
  a caller without a valid key, session or OIDC token gets its 401 after reading only the headers
  (no multipart spooled to disk, no JSON parsed: malformed JSON without a key is a 401, not a 422).
  The principal it found is handed to the route's dependency, so the lookup happens once.
- :class:`BodyLimit` counts the bytes of every body as they stream (chunked bodies included), not
  only the Content-Length header.
- :class:`SecurityHeaders` adds the usual headers to every response, and ``no-store`` on the API.
- Failed authentications are audited, at most one log line and one audit row per peer per window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import DATABASE_ERRORS, database_unavailable, error_response
from app.services import audit

__all__ = ["AuthGate", "BodyLimit", "FailedAuthMonitor", "SecurityHeaders"]

logger = logging.getLogger(__name__)

Resolver = Callable[[Request], object]


class FailedAuthMonitor:
    """Counts refused credentials per peer; reports each peer at most once per ``window_s``."""

    def __init__(self, record: Callable[[str, int, str], None], window_s: float = 60.0) -> None:
        self._record = record
        self._window_s = window_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[int, float]] = {}  # peer -> (count, last report time)

    def failed(self, peer: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            count, last = self._pending.get(peer, (0, -self._window_s))
            count += 1
            due = now - last >= self._window_s
            self._pending[peer] = (0, now) if due else (count, last)
            if len(self._pending) > 10_000:  # bounded memory under a spray of source addresses
                self._pending.clear()
        if due:
            logger.warning(
                "authentication failed: peer %s, %d refused request(s) in the last %.0f s (%s)",
                peer,
                count,
                self._window_s,
                reason,
            )
            try:
                self._record(peer, count, reason)
            except Exception:
                logger.warning("could not audit a failed authentication", exc_info=True)


def audit_failed_auth(db: object) -> Callable[[str, int, str], None]:
    """Writes one ``auth.failed`` audit row (IHE ATNA: user authentication, failure)."""
    from app.db.session import Database

    assert isinstance(db, Database)

    def record(peer: str, count: int, reason: str) -> None:
        with db.session(immediate=True) as session:
            audit.record(
                session,
                actor=f"peer:{peer}"[:128],
                action="auth.failed",
                object_type="peer",
                object_id=peer[:64],
                details={"refused_requests": count, "reason": reason[:120]},
            )

    return record


class AuthGate:
    """401 for a non-public request whose credential does not resolve, before reading its body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        resolve: Resolver,
        public: Callable[[str, str], bool],
        monitor: FailedAuthMonitor,
    ) -> None:
        self.app = app
        self.resolve = resolve
        self.public = public
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.public(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            principal = await run_in_threadpool(self.resolve, request)
        except DATABASE_ERRORS as exc:  # the credential cannot be looked up: not the caller's fault
            await database_unavailable(request, exc)(scope, receive, send)
            return
        except HTTPException as exc:
            if exc.status_code == 401:
                peer = scope.get("client") or ("unknown", 0)
                self.monitor.failed(str(peer[0]), str(exc.detail).split(":", 1)[0])
            response = error_response(
                request,
                exc.status_code,
                "unauthorized" if exc.status_code == 401 else "error",
                str(exc.detail),
                headers=dict(exc.headers) if exc.headers else None,
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over ``limit`` bytes: by its Content-Length, or counted as it streams."""

    def __init__(
        self, app: ASGIApp, *, limit: int, exempt: Callable[[str], bool], detail: str
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, receive, send, int(value))
                return
        received = 0
        exceeded = False

        async def counted() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Stop reading; whatever the route makes of the cut body is replaced by a 413.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(scope, receive, send, received)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        response = error_response(
            Request(scope),
            413,
            "payload_too_large",
            f"The request body is more than {self.limit} bytes ({size} received); "
            f"the limit is {self.limit} {self.detail}",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_API_ONLY = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
_DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
    b"script-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
)


class SecurityHeaders:
    """nosniff, DENY framing, no referrer on every response; ``no-store`` and a strict CSP on the
    API (the docs page gets a CSP that allows its own, locally served, scripts)."""

    def __init__(self, app: ASGIApp, *, docs_prefix: str | None) -> None:
        self.app = app
        self.docs_prefix = docs_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = self.docs_prefix is not None and scope["path"].startswith(self.docs_prefix)
        extra = [*_COMMON, (b"cache-control", b"no-store"), _DOCS_CSP] if docs else _COMMON
        if not docs:
            extra = [*_COMMON, *_API_ONLY]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in present),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


AsyncApp = Callable[[Scope, Receive, Send], Awaitable[None]]
