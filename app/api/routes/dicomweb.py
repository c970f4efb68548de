"""DICOMweb (PS3.18) under /dicomweb: STOW-RS in; QIDO-RS and WADO-RS out of RadCheck's store.

Same credentials and roles as /api/v1: storing needs an integration (or admin) key, searching and
retrieving any role. Errors that are not per-instance STOW failures use the API's JSON error body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from app.api.deps import (
    DbDep,
    Integrator,
    ReadAuditDep,
    Reader,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.api.errors import ErrorBody, error_response
from app.api.routes.renders import RENDERED_RESPONSES, DisplayDep
from app.services.audit import ReadAuditBuffer
from app.services.dicomweb import (
    StoredObject,
    parse_qido,
    retrievable,
    search_instances,
    search_series,
    search_studies,
)
from app.services.errors import InvalidInputError, PayloadTooLargeError, StorageFullError
from app.services.images import MAX_SIZE, DisplayRequest
from app.services.ingest import decode_limits
from app.services.storage import ContentStore
from app.services.stow import (
    MultipartRelatedReceiver,
    PartResult,
    UnsupportedMediaTypeError,
    multipart_boundary,
    store_part,
)
from app.settings import Settings
from dicom_io import StowFailure, StowReference, instance_metadata, stow_response

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
SeriesPath = Annotated[
    str, Path(pattern=r"^[0-9.]{1,64}$", description="Series Instance UID (digits and dots)")
]
SopPath = Annotated[
    str, Path(pattern=r"^[0-9.]{1,64}$", description="SOP Instance UID (digits and dots)")
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
    "instance, 0xC122 transfer syntax, 0xA700 too large / too many parts, 0x0111 same "
    "SOP Instance UID with different content, 0x0110 processing failure. A full disk stops the "
    "request: 507 in the API's error shape, saying how many instances were stored before it."
)

STOW_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "All instances stored"},
    202: {"content": {DICOM_JSON: {}}, "description": "Some instances failed (listed)"},
    400: {"model": ErrorBody, "description": "Malformed multipart body"},
    409: {"content": {DICOM_JSON: {}}, "description": "No instance stored"},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit"},
    415: {"model": ErrorBody, "description": "Not multipart/related; type=application/dicom"},
    507: {"model": ErrorBody, "description": "The disk is full; the rest was not stored"},
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
    decode = decode_limits(settings)

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
                    limits=decode,
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
    except StorageFullError as exc:
        stored = sum(1 for r in results if r.outcome is not None)
        return error_response(
            request,
            507,
            "insufficient_storage",
            f"{exc} ({stored} instances of this request were stored before the disk filled: "
            "re-send the rest.)",
        )
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


# --- QIDO-RS -------------------------------------------------------------------------------------

QIDO_DESCRIPTION = (
    "Matching keys by keyword or tag: StudyInstanceUID, PatientID, PatientName (wildcards * ?), "
    "StudyDate (YYYYMMDD or ranges), AccessionNumber, ModalitiesInStudy, StudyDescription; series: "
    "SeriesInstanceUID, Modality, SeriesNumber; instances: SOPInstanceUID, SOPClassUID, "
    "InstanceNumber. limit (<= 1000), offset, includefield (keywords or all). Text matching is "
    "case-insensitive. Answer: application/dicom+json (an empty array when nothing matches)."
)
QIDO_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {DICOM_JSON: {}}, "description": "Matching objects (DICOM JSON array)"},
    400: {"model": ErrorBody, "description": "An unsupported matching key or a bad value"},
    406: {"model": ErrorBody, "description": "Accept names no JSON media type"},
}
QIDO_ROUTE: dict[str, Any] = {
    "description": QIDO_DESCRIPTION,
    "response_class": Response,
    "responses": QIDO_RESPONSES,
}

QidoLevel = Literal["study", "series", "instance"]
QIDO_SEARCH: dict[QidoLevel, Callable[..., list[dict[str, Any]]]] = {
    "study": search_studies,
    "series": search_series,
    "instance": search_instances,
}
"""Each level's search; it takes the path's study (and series) UID after the query."""


def _unless_json(request: Request, refusal: str) -> Response | None:
    """A 406 saying ``refusal`` when the Accept header takes no JSON, else None."""
    accept = request.headers.get("accept", "").lower()
    if not accept or any(m in accept for m in ("json", "*/*", "application/*")):
        return None
    return error_response(request, 406, "not_acceptable", refusal)


@dataclass(frozen=True)
class Search:
    """A QIDO-RS request as every level reads it: its query, a session and the public base URL."""

    request: Request
    session: Session
    base: str

    def answer(self, level: QidoLevel, *within: str) -> Response:
        """The DICOM JSON of ``level``'s matches (within the path's study / series UIDs)."""
        refused = _unless_json(
            self.request,
            "QIDO-RS answers application/dicom+json only (application/dicom+xml is not supported).",
        )
        if refused is not None:
            return refused
        try:
            query = parse_qido(list(self.request.query_params.multi_items()), level)
        except InvalidInputError as exc:
            return error_response(self.request, 400, "bad_request", str(exc))
        body = QIDO_SEARCH[level](self.session, query, self.base, *within)
        return JSONResponse(body, media_type=DICOM_JSON)


def get_search(
    request: Request, session: SessionDep, settings: SettingsDep, principal: Reader
) -> Search:
    return Search(request, session, public_base(request, settings))


SearchDep = Annotated[Search, Depends(get_search)]


@router.get("/studies", summary="QIDO-RS: search for studies", **QIDO_ROUTE)
def qido_studies(search: SearchDep) -> Response:
    return search.answer("study")


@router.get("/series", summary="QIDO-RS: search for series (all studies)", **QIDO_ROUTE)
def qido_all_series(search: SearchDep) -> Response:
    return search.answer("series")


@router.get(
    "/studies/{study_uid}/series", summary="QIDO-RS: search for series of a study", **QIDO_ROUTE
)
def qido_series(study_uid: StudyPath, search: SearchDep) -> Response:
    return search.answer("series", study_uid)


@router.get("/instances", summary="QIDO-RS: search for instances (all studies)", **QIDO_ROUTE)
def qido_all_instances(search: SearchDep) -> Response:
    return search.answer("instance")


@router.get(
    "/studies/{study_uid}/instances",
    summary="QIDO-RS: search for instances of a study",
    **QIDO_ROUTE,
)
def qido_study_instances(study_uid: StudyPath, search: SearchDep) -> Response:
    return search.answer("instance", study_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances",
    summary="QIDO-RS: search for instances of a series",
    **QIDO_ROUTE,
)
def qido_series_instances(
    study_uid: StudyPath, series_uid: SeriesPath, search: SearchDep
) -> Response:
    return search.answer("instance", study_uid, series_uid)


# --- WADO-RS -------------------------------------------------------------------------------------

WADO_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {'multipart/related; type="application/dicom"': {}}},
    404: {"model": ErrorBody},
    406: {"model": ErrorBody, "description": "A transfer syntax RadCheck does not hold"},
}
META_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {DICOM_JSON: {}}},
    404: {"model": ErrorBody},
}
WADO_BOUNDARY = "radcheck-wado-9f1c2e7b"


def _requested_syntax(request: Request) -> str | Literal["*"] | None:
    """The transfer syntax the Accept header asks for ('*' or None: as stored)."""
    accept = request.headers.get("accept", "")
    if not accept:
        return None
    syntaxes: list[str] = []
    for item in accept.split(","):
        if "application/dicom" not in item.lower() and "*/*" not in item:
            continue
        match = re.search(r"transfer-syntax\s*=\s*\"?([0-9.*]+)", item)
        if match is None:
            return None
        syntaxes.append(match.group(1))
    if not syntaxes:
        raise NotAcceptableError(
            'WADO-RS retrieves instances as multipart/related; type="application/dicom": '
            f"the Accept header {accept[:120]!r} names no such media type."
        )
    return "*" if "*" in syntaxes else ",".join(syntaxes)


class NotAcceptableError(Exception):
    """The Accept header asks for something this server cannot produce."""


@dataclass(frozen=True)
class Retrieval:
    """A WADO-RS request at any level (study, series, instance): the objects and the read audit."""

    request: Request
    session: Session
    store: ContentStore
    reads: ReadAuditBuffer
    actor: str

    def audit(self, action: str, objects: list[StoredObject]) -> None:
        """Record the read of ``objects`` (one audit row for the whole answer)."""
        self.reads.add(
            actor=self.actor,
            action=action,
            study_id=objects[0].study_id,
            object_type="dicomweb",
            object_id=len(objects),
        )

    def instances(self, study_uid: str, *below: str) -> Response:
        """The instances as multipart/related application/dicom, as stored (no transcoding)."""
        try:
            wanted = _requested_syntax(self.request)
        except NotAcceptableError as exc:
            return error_response(self.request, 406, "not_acceptable", str(exc))
        objects = retrievable(self.session, study_uid, *below)
        if wanted not in (None, "*"):
            accepted = set(wanted.split(","))
            unmatched = [o for o in objects if o.transfer_syntax_uid not in accepted]
            if unmatched:
                return error_response(
                    self.request,
                    406,
                    "not_acceptable",
                    f"{len(unmatched)} instance(s) are stored in transfer syntax "
                    f"{unmatched[0].transfer_syntax_uid}, not {wanted}; RadCheck returns "
                    "instances as received (no transcoding): ask for transfer-syntax=* .",
                )
        self.audit("instances.retrieved", objects)
        paths = [(self.store.path_for(o.storage_path), o.transfer_syntax_uid) for o in objects]

        def body() -> Iterator[bytes]:
            for path, syntax in paths:
                ts = f"; transfer-syntax={syntax}" if syntax else ""
                yield (
                    f"--{WADO_BOUNDARY}\r\nContent-Type: application/dicom{ts}\r\n"
                    f"Content-Length: {path.stat().st_size}\r\n\r\n"
                ).encode()
                with path.open("rb") as handle:
                    while chunk := handle.read(1024 * 1024):
                        yield chunk
                yield b"\r\n"
            yield f"--{WADO_BOUNDARY}--\r\n".encode()

        return StreamingResponse(
            body(),
            media_type=f'multipart/related; type="application/dicom"; boundary={WADO_BOUNDARY}',
        )

    def metadata(self, study_uid: str, *below: str) -> Response:
        """The instances' metadata as DICOM JSON."""
        refused = _unless_json(
            self.request, "WADO-RS metadata is served as application/dicom+json."
        )
        if refused is not None:
            return refused
        objects = retrievable(self.session, study_uid, *below)
        self.audit("metadata.read", objects)
        # Bulk data (pixel data) is left out: RadCheck has no bulkdata resource; retrieve the instance.
        body = [instance_metadata(self.store.path_for(o.storage_path)) for o in objects]
        return JSONResponse(body, media_type=DICOM_JSON)


def get_retrieval(
    request: Request, session: SessionDep, store: StoreDep, reads: ReadAuditDep, principal: Reader
) -> Retrieval:
    return Retrieval(request, session, store, reads, principal.actor)


RetrievalDep = Annotated[Retrieval, Depends(get_retrieval)]
WADO_ROUTE: dict[str, Any] = {"response_class": Response, "responses": WADO_RESPONSES}
META_ROUTE: dict[str, Any] = {"response_class": Response, "responses": META_RESPONSES}


@router.get("/studies/{study_uid}", summary="WADO-RS: retrieve a study's instances", **WADO_ROUTE)
def wado_study(study_uid: StudyPath, wado: RetrievalDep) -> Response:
    return wado.instances(study_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}",
    summary="WADO-RS: retrieve a series' instances",
    **WADO_ROUTE,
)
def wado_series(study_uid: StudyPath, series_uid: SeriesPath, wado: RetrievalDep) -> Response:
    return wado.instances(study_uid, series_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    summary="WADO-RS: retrieve one instance",
    **WADO_ROUTE,
)
def wado_instance(
    study_uid: StudyPath, series_uid: SeriesPath, sop_uid: SopPath, wado: RetrievalDep
) -> Response:
    return wado.instances(study_uid, series_uid, sop_uid)


@router.get(
    "/studies/{study_uid}/metadata",
    summary="WADO-RS: metadata of a study's instances",
    **META_ROUTE,
)
def metadata_study(study_uid: StudyPath, wado: RetrievalDep) -> Response:
    return wado.metadata(study_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/metadata",
    summary="WADO-RS: metadata of a series' instances",
    **META_ROUTE,
)
def metadata_series(study_uid: StudyPath, series_uid: SeriesPath, wado: RetrievalDep) -> Response:
    return wado.metadata(study_uid, series_uid)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
    summary="WADO-RS: metadata of one instance",
    **META_ROUTE,
)
def metadata_instance(
    study_uid: StudyPath, series_uid: SeriesPath, sop_uid: SopPath, wado: RetrievalDep
) -> Response:
    return wado.metadata(study_uid, series_uid, sop_uid)


def _display_request(accept: str, window: str | None, viewport: str | None) -> DisplayRequest | str:
    """WADO-RS rendered parameters as the display pipeline's request, or what is wrong with them."""
    fmt: Literal["png", "jpeg"] = (
        "jpeg" if "image/jpeg" in accept and "image/png" not in accept else "png"
    )
    center = width = None
    if window is not None:
        parts = window.split(",")
        try:
            center, width = float(parts[0]), float(parts[1])
        except (ValueError, IndexError):
            return "window must be center,width[,function]"
        if width < 1:
            return "window width must be >= 1"
    size = 1024
    if viewport is not None:
        size = max(16, min(MAX_SIZE, max(int(v) for v in viewport.split(","))))
    return DisplayRequest(center=center, width=width, max_size=size, format=fmt)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
    summary="WADO-RS: the instance rendered (image/png or image/jpeg)",
    description="The checker's display pipeline (MONOCHROME1 inverted, VOI LUT / window). "
    "Accept: image/jpeg for JPEG, else PNG. Query: window=center,width[,function] and "
    "viewport=width,height (the longest side is fitted).",
    response_class=Response,
    responses={**RENDERED_RESPONSES, 400: {"model": ErrorBody}},
)
def rendered_instance(
    request: Request,
    study_uid: StudyPath,
    series_uid: SeriesPath,
    sop_uid: SopPath,
    display: DisplayDep,
    window: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9.,\-a-zA-Z_]+$")] = None,
    viewport: Annotated[str | None, Query(max_length=32, pattern=r"^[0-9]+(,[0-9]+)?$")] = None,
) -> Response:
    retrievable(display.session, study_uid, series_uid, sop_uid)  # 404 unless under this path
    req = _display_request(request.headers.get("accept", "").lower(), window, viewport)
    if isinstance(req, str):
        return error_response(request, 400, "bad_request", req)
    out, _cached = display.render(sop_uid, req)
    return Response(out.content, media_type=out.media_type)
