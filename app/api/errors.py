"""One JSON error shape for every failure, and the one table mapping domain errors to statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

import dicom_io
from app.services.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceError,
    StorageFullError,
    database_disk_full,
)
from medvlm.checking import CheckerConfigError, CheckTimeBudgetError
from medvlm.errors import MedVLMError
from medvlm.runtime import (
    CheckpointError,
    DeviceError,
    NoModelConfiguredError,
    QuantizationError,
    RemoteModelError,
    RuntimeConfigError,
)

__all__ = ["ErrorBody", "install_error_handlers"]

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error response: what kind, what went wrong and how to fix it, and the request id."""

    type: str = Field(examples=["not_found"])
    detail: str = Field(examples=["No study with StudyInstanceUID '1.2.3'."])
    request_id: str = Field(examples=["6f1c2b0e9a4d4d3b"])
    errors: list[dict[str, object]] | None = Field(
        default=None, description="Per-item problems (validation errors, rejected files)."
    )


# Domain error -> (status, type). The first matching class wins (order: most specific first).
STATUS_TABLE: list[tuple[type[Exception], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (PayloadTooLargeError, 413, "payload_too_large"),
    (InvalidInputError, 422, "invalid_input"),
    (StorageFullError, 507, "insufficient_storage"),
    (dicom_io.LimitExceededError, 413, "payload_too_large"),
    (dicom_io.DicomIOError, 422, "invalid_dicom"),
    (CheckTimeBudgetError, 503, "check_time_budget"),
    # The model side failed, not the request (remote model down, bad checkpoint, wrong device or
    # configuration): 503, the same request may succeed once the server is fixed.
    (RemoteModelError, 503, "model_unavailable"),
    (CheckpointError, 503, "model_unavailable"),
    (DeviceError, 503, "model_unavailable"),
    (QuantizationError, 503, "model_unavailable"),
    (NoModelConfiguredError, 503, "model_unavailable"),
    (RuntimeConfigError, 503, "model_unavailable"),
    (CheckerConfigError, 503, "model_unavailable"),
    (MedVLMError, 422, "invalid_input"),  # the rest: what was sent (report, image) is unusable
    (ServiceError, 400, "bad_request"),
]

HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    423: "locked",
    503: "unavailable",
    507: "insufficient_storage",
}


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def error_response(
    request: Request,
    status: int,
    type_: str,
    detail: str,
    errors: list[dict[str, object]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(type=type_, detail=detail, request_id=request_id_of(request), errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


DATABASE_ERRORS = (OperationalError, InterfaceError)
"""What SQLAlchemy raises when the database went away (restart, failover, network) or is busy."""


def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After in the one error shape: nothing was committed, the caller may retry.

    A database whose disk is full is no outage a retry outlives: 507, naming the fix."""
    full = database_disk_full(exc)
    if full is not None:
        logger.error("database disk full (request %s)", request_id_of(request))
        return error_response(request, 507, "insufficient_storage", str(full))
    logger.warning(
        "database unavailable (request %s): %s", request_id_of(request), type(exc).__name__
    )
    return error_response(
        request,
        503,
        "unavailable",
        "The database is unavailable (restarting or unreachable); nothing was changed. "
        "Retry in a few seconds.",
        headers={"Retry-After": "2"},
    )


def status_for(exc: Exception) -> tuple[int, str]:
    for cls, status, type_ in STATUS_TABLE:
        if isinstance(exc, cls):
            return status, type_
    return 500, "internal_error"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request,
            exc.status_code,
            HTTP_TYPES.get(exc.status_code, "error"),
            str(exc.detail),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(HTTPException)
    async def _fastapi_http(request: Request, exc: HTTPException) -> JSONResponse:
        return await _http(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: list[dict[str, object]] = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])  # type: ignore[call-overload]
        return error_response(
            request, 422, "invalid_input", f"The request is invalid: {summary}", errors
        )

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        status, type_ = status_for(exc)
        if status >= 500:
            logger.warning("%s (request %s): %s", type_, request_id_of(request), type(exc).__name__)
        return error_response(request, status, type_, str(exc))

    for cls, _status, _type in STATUS_TABLE:
        app.add_exception_handler(cls, _domain)

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return database_unavailable(request, exc)

    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error (request %s)", request_id_of(request))
        return error_response(
            request,
            500,
            "internal_error",
            "RadCheck could not complete the request; it was logged with this request id.",
        )
