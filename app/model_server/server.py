"""``create_model_server(runtime)``: chat completions with an image, models list, health."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import threading
import time
import uuid

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from numpy.typing import NDArray

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
from medvlm.errors import MedVLMError
from medvlm.runtime import VisionLanguageRuntime

__all__ = ["BadRequestError", "create_model_server"]

_LOG = logging.getLogger(__name__)
_MAX_IMAGE_BYTES = 64 * 1024 * 1024
_DEFAULT_MAX_TOKENS = 256


class BadRequestError(Exception):
    """A chat-completions request we cannot serve (answered 400 in the OpenAI error shape)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=kind, param=param))
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


def create_model_server(runtime: VisionLanguageRuntime) -> FastAPI:
    """A FastAPI app serving ``runtime`` with the OpenAI chat-completions shape.

    Generation is serialised with a lock (one model, one request at a time); endpoints are plain
    ``def`` so FastAPI runs them in its thread pool, never blocking the event loop.
    """
    app = FastAPI(title="RadCheck model server", version="1")
    lock = threading.Lock()
    created = int(time.time())

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
        return ModelList(data=[ModelCard(id=runtime.model_id, created=created)])

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    def chat_completions(request: ChatCompletionRequest) -> ChatCompletionResponse:
        if request.stream:
            raise BadRequestError("stream=true is not supported", param="stream")
        if request.model is not None and request.model != runtime.model_id:
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

    return app
