"""Text that cannot be stored or logged is refused at the door with a 422 (issue 16, item 4).

JSON may carry ``\\ud800`` (a lone UTF-16 surrogate) or ``\\u0000``: Python decodes them into a str
that later breaks UTF-8 encoding (database, logs, the response itself) or PostgreSQL's text type.
:class:`TextGuard` looks at every JSON request body, the path and the query string before a route
runs, and answers 422 in the one error shape naming where the bad character is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TextGuard", "unsafe_text"]

# Lone surrogates, NUL and the C0 controls other than tab, line feed, carriage return and form feed.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0e-\x1f\ud800-\udfff]")


def unsafe_text(value: str) -> str | None:
    """Why ``value`` cannot be accepted as text, or None when it can."""
    found = _UNSAFE.search(value)
    if found is None:
        return None
    char = found.group()
    what = (
        "a lone UTF-16 surrogate"
        if "\ud800" <= char <= "\udfff"
        else "a NUL character"
        if char == "\x00"
        else "a control character"
    )
    return (
        f"contains {what} (U+{ord(char):04X}) at character {found.start()}: send valid Unicode "
        "text (UTF-8) without control characters"
    )


def _strings(value: object, loc: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    stack: list[tuple[tuple[str, ...], object]] = [(loc, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict):
            for key, child in item.items():
                yield (*where, "<key>"), str(key)
                stack.append(((*where, str(key)), child))
        elif isinstance(item, list):
            stack.extend(((*where, str(i)), child) for i, child in enumerate(item))


def _problems(items: Iterator[tuple[tuple[str, ...], str]]) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for loc, text in items:
        problem = unsafe_text(text)
        if problem is not None:
            found.append({"loc": list(loc), "msg": problem})
            if len(found) >= 20:
                break
    return found


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class TextGuard:
    """ASGI middleware: 422 for unsafe characters in the path, the query or a JSON body.

    The JSON body is read here (bounded by the body limit that runs before this) and handed on
    unchanged; a body that is not valid JSON is left for the route's own 422.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        items: list[tuple[tuple[str, ...], str]] = [(("path",), scope.get("path", ""))]
        query = scope.get("query_string", b"").decode("latin-1")
        for name, value in parse_qsl(query, keep_blank_values=True):
            items += [(("query", "<name>"), name), (("query", name), value)]
        problems = _problems(iter(items))
        if problems or not _is_json(scope):
            if problems:
                await self._refuse(scope, receive, send, problems)
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay(b"".join(chunks), receive, message), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            document = json.loads(body) if body else None
        except ValueError:  # not JSON (or not UTF-8): the route answers its own 422
            document = None
        problems = _problems(_strings(document, ("body",))) if document is not None else []
        if problems:
            await self._refuse(scope, receive, send, problems)
            return
        await self.app(scope, _replay(body, receive, None), send)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, problems: list[dict[str, object]]
    ) -> None:
        from app.api.errors import error_response

        summary = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems[:3])  # type: ignore[call-overload]
        response = error_response(
            Request(scope), 422, "invalid_input", f"The request is invalid: {summary}", problems
        )
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive, first: Message | None) -> Receive:
    """A ``receive`` that hands over the buffered body once, then the original channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if first is not None:
                return first
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
