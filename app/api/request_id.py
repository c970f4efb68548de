"""The request id: taken from ``X-Request-ID`` (64 characters at most) or made up, put on the
request's state for logs and error bodies, and echoed on the response. Plain ASGI, so it adds no
task or stream per request (Starlette's ``BaseHTTPMiddleware`` adds both)."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestId"]

_HEADER = b"x-request-id"


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", []) if k == _HEADER), b"")
        rid = given.decode("latin-1")[:64] or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        encoded = rid.encode("latin-1")

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                message["headers"] = [*headers, (_HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, with_id)
