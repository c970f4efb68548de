"""``create_model_server(runtime)``: chat completions with an image, models list, health."""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import logging
import threading
import time
import uuid
from collections.abc import Callable

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from numpy.typing import NDArray
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import RequestResponseEndpoint
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.model_server.schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ErrorBody,
    ErrorResponse,
    Health,
    ImagePart,
    ModelCard,
    ModelList,
    RadCheckExtra,
    TextPart,
    Usage,
)
from app.settings import MIN_API_KEY_LENGTH
from medvlm.errors import MedVLMError
from medvlm.runtime import VisionLanguageRuntime

__all__ = ["MIN_API_KEY_LENGTH", "OPEN_PATHS", "BadRequestError", "create_model_server"]

_LOG = logging.getLogger(__name__)
_ACCESS_LOG = logging.getLogger("app.model_server.access")
_MAX_IMAGE_BYTES = 64 * 1024 * 1024
_DEFAULT_MAX_TOKENS = 256
OPEN_PATHS = frozenset({"/health"})
"""The only paths served without the API key when one is configured."""


class BadRequestError(Exception):
    """A chat-completions request we cannot serve (answered 400 in the OpenAI error shape)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _error(
    status: int, message: str, kind: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=kind, param=param, code=code))
    return JSONResponse(status_code=status, content=body.model_dump())


def decode_data_url(url: str) -> NDArray[np.uint8]:
    """A ``data:image/...;base64,`` URL to a grey uint8 image (H x W)."""
    from PIL import Image, UnidentifiedImageError

    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise BadRequestError(
            "image_url.url must be a base64 data URL (data:image/png;base64,...); remote URLs "
            "are not fetched",
            param="messages.content.image_url",
        )
    if len(payload) > _MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadRequestError(
            f"image larger than {_MAX_IMAGE_BYTES // (1024 * 1024)} MiB", "image_url"
        )
    try:
        raw = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            grey = img.convert("L")
            return np.asarray(grey, dtype=np.uint8).copy()
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(f"image_url is not valid base64: {exc}", "image_url") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise BadRequestError(f"image_url is not a readable image: {exc}", "image_url") from exc


def _split_request(request: ChatCompletionRequest) -> tuple[str, NDArray[np.uint8] | None]:
    if any(m.role == "system" for m in request.messages):
        raise BadRequestError(
            "system messages are not supported: the model answers inside its own fixed "
            "conversation template (LLaVA-Rad: the Vicuna v1 system prompt), which a request "
            "cannot replace; send one user message with the instruction and the image",
            param="messages",
        )
    users = [m for m in request.messages if m.role == "user"]
    if len(users) != 1 or any(m.role == "assistant" for m in request.messages):
        raise BadRequestError(
            "exactly one user message (and no assistant turns) is supported: the model answers "
            "one instruction about one image",
            param="messages",
        )
    content = users[0].content
    if isinstance(content, str):
        return content, None
    texts = [part.text for part in content if isinstance(part, TextPart)]
    images = [part for part in content if isinstance(part, ImagePart)]
    if len(images) > 1:
        raise BadRequestError("at most one image per request is supported", param="messages")
    image = decode_data_url(images[0].image_url.url) if images else None
    return "\n".join(texts), image


def _bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _unauthorized(message: str) -> JSONResponse:
    response = _error(401, message, "invalid_request_error", code="invalid_api_key")
    response.headers["WWW-Authenticate"] = 'Bearer realm="radcheck-model-server"'
    return response


class AccessLog:
    """One INFO line per request: client, method, path, status, milliseconds.

    Never the query string (a client may send a key as ``?api_key=``), headers or body; it
    replaces uvicorn's access log, which writes the query string.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client")
            _ACCESS_LOG.info(
                "%s %s %s %d %.1f ms",
                client[0] if client else "-",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000.0,
            )


def create_model_server(
    runtime: VisionLanguageRuntime,
    *,
    api_key: str | None = None,
    served_model_name: str | None = None,
    authorize: Callable[[str], bool] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``runtime`` with the OpenAI chat-completions shape.

    With ``api_key``, every path but ``/health`` (the OpenAPI docs included) needs
    ``Authorization: Bearer <api_key>``, compared in constant time; anything else is answered 401
    in OpenAI's error shape. Without it the server is unauthenticated: bind it to loopback only.
    System messages are refused (400): the runtime applies its own fixed conversation template.
    ``served_model_name`` is the name clients ask for (default: the runtime's model id); requests
    may name it or the model id.

    Generation is serialised with a lock (one model, one request at a time); endpoints are plain
    ``def`` so FastAPI runs them in its thread pool, never blocking the event loop.

    With ``authorize``, a bearer token is also accepted when ``authorize(token)`` is true; it is
    called on every request, uncached (RadCheck API keys: a revoked key is refused at once).
    """
    served_name = served_model_name or runtime.model_id
    if api_key is not None and len(api_key) < MIN_API_KEY_LENGTH:
        raise ValueError(
            f"the model server API key has {len(api_key)} characters, fewer than "
            f"{MIN_API_KEY_LENGTH}: generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    app = FastAPI(title="RadCheck model server", version="1")
    lock = threading.Lock()
    created = int(time.time())

    if api_key is not None or authorize is not None:
        expected = api_key.encode("utf-8") if api_key is not None else None

        @app.middleware("http")
        async def _require_key(request: Request, call_next: RequestResponseEndpoint) -> Response:
            if request.url.path in OPEN_PATHS:
                return await call_next(request)
            token = _bearer_token(request)
            if token is None:
                return _unauthorized(
                    "missing API key: send the header 'Authorization: Bearer <key>' (the key "
                    "the server was started with; RadCheck workers: RADCHECK_MODEL__OPENAI_API_KEY)"
                )
            matches = expected is not None and hmac.compare_digest(token.encode("utf-8"), expected)
            if not matches and authorize is not None:
                matches = await run_in_threadpool(authorize, token)
            if not matches:
                _LOG.warning("rejected a request with a wrong API key on %s", request.url.path)
                return _unauthorized(
                    "incorrect API key: it does not match the key the model server was started "
                    "with (RADCHECK_MODEL__OPENAI_API_KEY on the workers must equal it), nor an "
                    "active (not revoked) RadCheck key when --radcheck-keys is on"
                )
            return await call_next(request)

    @app.exception_handler(BadRequestError)
    def _bad_request(_: Request, exc: BadRequestError) -> JSONResponse:
        return _error(400, exc.message, "invalid_request_error", exc.param)

    @app.exception_handler(RequestValidationError)
    def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(
            400, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error"
        )

    @app.exception_handler(MedVLMError)
    def _model_error(_: Request, exc: MedVLMError) -> JSONResponse:
        _LOG.warning("generation failed: %s", type(exc).__name__)
        return _error(503, str(exc), "model_error")

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(model=runtime.model_id)

    @app.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        capabilities = ["boxes"] if runtime.supports_boxes else []
        return ModelList(
            data=[ModelCard(id=served_name, created=created, capabilities=capabilities)]
        )

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    def chat_completions(request: ChatCompletionRequest) -> ChatCompletionResponse:
        if request.stream:
            raise BadRequestError("stream=true is not supported", param="stream")
        if request.model is not None and request.model not in (runtime.model_id, served_name):
            raise BadRequestError(
                f"model {request.model!r} is not served here; this server serves "
                f"{runtime.model_id!r}",
                param="model",
            )
        instruction, image = _split_request(request)
        max_tokens = request.max_completion_tokens or request.max_tokens or _DEFAULT_MAX_TOKENS
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        with lock:
            result = runtime.generate(image, instruction, max_new_tokens=max_tokens)
            provenance = runtime.provenance()
        _LOG.info(
            "request %s: %d prompt, %d output tokens",
            request_id,
            result.prompt_tokens,
            result.output_tokens,
        )
        finish = "length" if result.output_tokens >= max_tokens else "stop"
        return ChatCompletionResponse(
            id=request_id,
            created=int(time.time()),
            model=runtime.model_id,
            choices=[
                Choice(index=0, message=AssistantMessage(content=result.text), finish_reason=finish)
            ],
            usage=Usage(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.output_tokens,
                total_tokens=result.prompt_tokens + result.output_tokens,
            ),
            radcheck=RadCheckExtra(
                visual_tokens=result.visual_tokens,
                timings_ms=result.timings_ms,
                provenance=provenance,
            ),
        )

    app.add_middleware(AccessLog)
    return app
