"""DICOMweb (PS3.18) under /dicomweb: STOW-RS in; QIDO-RS and WADO-RS out of RadCheck's store.

Same credentials and roles as /api/v1: storing needs an integration (or admin) key, searching and
retrieving any role. Errors that are not per-instance STOW failures use the API's JSON error body.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.api.deps import DbDep, Integrator, SettingsDep, StoreDep
from app.api.errors import ErrorBody, error_response
from app.services.errors import InvalidInputError, PayloadTooLargeError
from app.services.stow import (
    MultipartRelatedReceiver,
    PartResult,
    UnsupportedMediaTypeError,
    multipart_boundary,
    store_part,
)
from app.settings import Settings
from dicom_io.web import StowFailure, StowReference, stow_response

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"

StudyPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9.]{1,64}$",
        description="Study Instance UID (digits and dots)",
        examples=["1.2.840.113619.2.1.1"],
    ),
]


def public_base(request: Request, settings: Settings) -> str:
    """The base URL clients reach RadCheck at (RADCHECK_DICOMWEB__PUBLIC_BASE_URL, else the request's)."""
    base = settings.dicomweb.public_base_url or str(request.base_url)
    return base.rstrip("/") + "/dicomweb"


STOW_DESCRIPTION = (
    'Body: multipart/related; type="application/dicom", one DICOM Part 10 instance per part; '
    "streamed to disk part by part (chunked bodies welcome), each part validated and stored durably "
    "through the same ingest service as POST /api/v1/instances (idempotent on SOP Instance UID) "
    "before the answer. Answer: application/dicom+json with ReferencedSOPSequence (RetrieveURL "
    "built from RADCHECK_DICOMWEB__PUBLIC_BASE_URL) and FailedSOPSequence. 200: all stored; 202: "
    "some failed; 409: none stored; 415: not multipart/related application/dicom. Failure reasons: "
    "0xC000 cannot understand, 0xA900 missing/invalid element or (path form) another study's "
    "instance, 0xC122 transfer syntax, 0xA700 too large / too many parts / disk full, 0x0111 same "
    "SOP Instance UID with different content, 0x0110 processing failure."
)

STOW_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "All instances stored"},
    202: {"content": {DICOM_JSON: {}}, "description": "Some instances failed (listed)"},
    400: {"model": ErrorBody, "description": "Malformed multipart body"},
    409: {"content": {DICOM_JSON: {}}, "description": "No instance stored"},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit"},
    415: {"model": ErrorBody, "description": "Not multipart/related; type=application/dicom"},
}


async def _stow(
    request: Request,
    study: str | None,
    principal_actor: str,
    db: DbDep,
    store: StoreDep,
    settings: Settings,
) -> Response:
    limits = settings.dicomweb
    try:
        boundary = multipart_boundary(request.headers.get("content-type", ""))
    except UnsupportedMediaTypeError as exc:
        return error_response(request, 415, "unsupported_media_type", str(exc))
    except InvalidInputError as exc:
        return error_response(request, 400, "bad_request", str(exc))
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_request_bytes:
        return error_response(
            request,
            413,
            "payload_too_large",
            f"The STOW-RS body is {int(length)} bytes; the limit is {limits.max_request_bytes} "
            "(RADCHECK_DICOMWEB__MAX_REQUEST_BYTES): send the study in several requests.",
        )
    receiver = MultipartRelatedReceiver(
        boundary=boundary,
        tmp_dir=settings.storage.data_dir / "incoming",
        max_part_bytes=settings.storage.max_upload_bytes,
        max_request_bytes=limits.max_request_bytes,
    )
    results: list[PartResult] = []

    async def drain() -> None:
        for part in receiver.take_ready():
            results.append(
                await run_in_threadpool(
                    store_part,
                    db,
                    store,
                    part,
                    actor=principal_actor,
                    expected_study_uid=study,
                    max_parts=limits.max_parts,
                )
            )
            part.path.unlink(missing_ok=True)

    try:
        async for chunk in request.stream():
            receiver.feed(chunk)
            await drain()
        receiver.finish()
        await drain()
    except PayloadTooLargeError as exc:
        stored = sum(1 for r in results if r.outcome is not None)
        return error_response(
            request, 413, "payload_too_large", f"{exc} ({stored} instances were stored.)"
        )
    except InvalidInputError as exc:
        return error_response(request, 400, "bad_request", str(exc))
    finally:
        receiver.cleanup()

    base = public_base(request, settings)
    references: list[StowReference] = []
    failures: list[StowFailure] = []
    for result in results:
        if result.outcome is not None:
            o = result.outcome
            references.append(
                StowReference(
                    sop_class_uid=result.sop_class_uid or "",
                    sop_instance_uid=o.sop_instance_uid,
                    retrieve_url=f"{base}/studies/{o.study_instance_uid}/series/"
                    f"{o.series_instance_uid}/instances/{o.sop_instance_uid}",
                )
            )
        elif result.failure is not None:
            failures.append(result.failure)
    if failures:
        logger.info(
            "STOW-RS: %d stored, %d failed (reasons %s)",
            len(references),
            len(failures),
            sorted({f"{int(f.reason):04X}" for f in failures}),
        )
    study_uids = {r.outcome.study_instance_uid for r in results if r.outcome is not None}
    study_url = f"{base}/studies/{next(iter(study_uids))}" if len(study_uids) == 1 else None
    body = stow_response(references, failures, study_retrieve_url=study_url)
    status = 200 if not failures else 202 if references else 409
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


@router.post(
    "/studies",
    summary="STOW-RS: store instances (any study)",
    description=STOW_DESCRIPTION,
    response_class=Response,
    responses=STOW_RESPONSES,
)
async def stow_studies(
    request: Request, principal: Integrator, db: DbDep, store: StoreDep, settings: SettingsDep
) -> Response:
    return await _stow(request, None, principal.actor, db, store, settings)


@router.post(
    "/studies/{study_uid}",
    summary="STOW-RS: store instances of one study",
    description=STOW_DESCRIPTION
    + " Instances of another study fail with 0xA900 (the others are stored).",
    response_class=Response,
    responses=STOW_RESPONSES,
)
async def stow_study(
    request: Request,
    study_uid: StudyPath,
    principal: Integrator,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    return await _stow(request, study_uid, principal.actor, db, store, settings)
