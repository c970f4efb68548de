"""STOW-RS intake: a multipart/related body streamed part by part to temp files, each part through
the same ingest service as the upload route.

The body is never held in memory: :class:`MultipartRelatedReceiver` is fed the request's chunks as
they arrive (clients send large bodies chunked, without a Content-Length, so the limit counts the
bytes streamed) and writes each part to its own temp file. :func:`store_part` then validates and
stores one part and says how it went as a STOW-RS reference or failure.

Failure reasons (PS3.18 table I.2-1), one per part:

- 0xC000 cannot understand: not DICOM, truncated, or a part whose Content-Type is not
  application/dicom;
- 0xA900 data set does not match SOP class: a required element missing or invalid, and, by
  RadCheck's choice, an instance whose StudyInstanceUID is not the study named in the path of
  ``POST /dicomweb/studies/{study}`` (the standard asks for a failure, not for a code);
- 0xC122 transfer syntax not supported;
- 0xA700 out of resources: the part is larger than RADCHECK_STORAGE__MAX_UPLOAD_BYTES, or the
  request has more parts than RADCHECK_DICOMWEB__MAX_PARTS;
- 0x0111 duplicate SOP instance: the SOP Instance UID is stored with different content (a
  re-send of the same bytes is a success);
- 0x0110 processing failure: anything else (logged with the request's surrogate ids only).

A full disk is no part's failure: it stops the request, whose answer is a 507 (the receiver and
:func:`store_part` raise :class:`StorageFullError`; the parts stored before it stay stored).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

import dicom_io
from app.db.session import Database
from app.services.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    ServiceError,
    StorageFullError,
    database_disk_full,
)
from app.services.ingest import IngestLimits, IngestOutcome, StudyMismatchError, ingest_instance
from app.services.storage import ContentStore, raise_if_full
from dicom_io import FailureReason, StowFailure, failure_reason_for, peek_sop_uids

__all__ = [
    "MultipartRelatedReceiver",
    "PartResult",
    "ReceivedPart",
    "UnsupportedMediaTypeError",
    "multipart_boundary",
    "store_part",
]

logger = logging.getLogger(__name__)

DICOM_MEDIA_TYPE = "application/dicom"


class UnsupportedMediaTypeError(ServiceError):
    """The request is not multipart/related with type application/dicom."""


MAX_BOUNDARY_CHARS = 200


def multipart_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/related; type="application/dicom"`` Content-Type.

    Raises :class:`UnsupportedMediaTypeError` for another media type and :class:`InvalidInputError`
    when the boundary is missing.
    """
    media, params = parse_options_header(content_type)
    media_type = media.decode("latin-1").lower()
    part_type = params.get(b"type", b"").decode("latin-1").lower()
    if media_type != "multipart/related" or part_type not in ("", DICOM_MEDIA_TYPE):
        shown = content_type[:120] or "(none)"
        raise UnsupportedMediaTypeError(
            f'STOW-RS needs Content-Type multipart/related; type="application/dicom"; '
            f"boundary=...; got {shown!r}. (application/dicom+json / +xml bulk data bodies are "
            "not supported.)"
        )
    boundary = params.get(b"boundary", b"").decode("latin-1")
    # RFC 2046 says 1-70 characters, but real senders exceed it (Orthanc's DICOMweb plugin 1.7
    # sends 73): be liberal in what is accepted, with a bound that still refuses garbage.
    if not boundary or len(boundary) > MAX_BOUNDARY_CHARS:
        raise InvalidInputError(
            "The multipart/related Content-Type has no usable boundary parameter (1 to "
            f"{MAX_BOUNDARY_CHARS} characters; RFC 2046 asks for at most 70)."
        )
    return boundary


@dataclass
class ReceivedPart:
    """One part of the body, on disk."""

    index: int
    path: Path
    content_type: str | None
    size: int = 0
    too_large: bool = False


@dataclass
class MultipartRelatedReceiver:
    """Streams a multipart/related body to one temp file per part; never holds a part in memory."""

    boundary: str
    tmp_dir: Path
    max_part_bytes: int
    max_request_bytes: int
    received_bytes: int = 0
    finished: bool = False
    _ready: list[ReceivedPart] = field(default_factory=list)
    _current: ReceivedPart | None = None
    _handle: BinaryIO | None = None
    _header_field: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _headers: dict[str, str] = field(default_factory=dict)
    _count: int = 0
    _all: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._parser = MultipartParser(
            self.boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_end": self._end,
            },
            max_header_count=16,
        )

    # python-multipart callbacks
    def _part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=".stow-", suffix=".part")
        path = Path(name)
        self._all.append(path)
        self._handle = os.fdopen(fd, "wb")
        self._current = ReceivedPart(
            index=self._count, path=path, content_type=self._headers.get("content-type")
        )
        self._count += 1

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None:
            return
        part.size += end - start
        if part.size > self.max_part_bytes:
            part.too_large = True  # keep counting, stop writing
            return
        if self._handle is not None:
            self._handle.write(data[start:end])

    def _part_end(self) -> None:
        if self._current is None:
            return
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._ready.append(self._current)
        self._current = None

    def _end(self) -> None:
        self.finished = True

    # the receiver's interface
    def feed(self, chunk: bytes) -> None:
        """Parse one chunk of the body. Raises PayloadTooLargeError / InvalidInputError."""
        self.received_bytes += len(chunk)
        if self.received_bytes > self.max_request_bytes:
            raise PayloadTooLargeError(
                f"The STOW-RS body is larger than {self.max_request_bytes} bytes "
                "(RADCHECK_DICOMWEB__MAX_REQUEST_BYTES); the instances stored before the limit "
                "was reached are kept: send the rest in another request."
            )
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidInputError(
                f"The multipart/related body is malformed: {exc} (check the boundary and the "
                "CRLF line endings between parts)."
            ) from None
        except OSError as exc:  # writing a part's temp file (RADCHECK_STORAGE__DATA_DIR/incoming)
            raise_if_full(exc, f"STOW-RS part {self._count} while it was received")
            raise

    def take_ready(self) -> list[ReceivedPart]:
        """The parts completed since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def finish(self) -> None:
        """The body ended: it must have closed its last boundary."""
        if not self.finished:
            raise InvalidInputError(
                "The multipart/related body ended before its closing boundary "
                f"('--{self.boundary}--'): the request was cut short or the boundary is wrong."
            )
        if self._count == 0:
            raise InvalidInputError("The STOW-RS request has no parts: send at least one instance.")

    def cleanup(self) -> None:
        """Remove every temp file (stored parts were copied into the content store)."""
        if self._handle is not None:
            with contextlib.suppress(OSError):  # its buffer may not fit a full disk: it goes anyway
                self._handle.close()
            self._handle = None
        for path in self._all:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class PartResult:
    """How one part went: stored (an IngestOutcome and its SOP class) or failed."""

    outcome: IngestOutcome | None
    sop_class_uid: str | None
    failure: StowFailure | None
    detail: str | None = None


def store_part(
    db: Database,
    store: ContentStore,
    part: ReceivedPart,
    *,
    actor: str,
    expected_study_uid: str | None,
    max_parts: int,
    limits: IngestLimits,
) -> PartResult:
    """Validate and store one part through :func:`ingest_instance` (inflated and pixel sizes
    bounded by ``limits``: the settings'); never raises for bad input. A full disk (the file
    store's or the database's) raises :class:`StorageFullError` (nothing of the part was stored)."""
    try:
        if part.index >= max_parts:
            return _failed(
                FailureReason.OUT_OF_RESOURCES,
                f"more than {max_parts} parts in one request (RADCHECK_DICOMWEB__MAX_PARTS)",
            )
        if part.too_large:
            return _failed(
                FailureReason.OUT_OF_RESOURCES,
                f"part larger than the limit of {store_limit_hint(part)}",
            )
        media = (part.content_type or DICOM_MEDIA_TYPE).split(";", 1)[0].strip().lower()
        if media != DICOM_MEDIA_TYPE:
            return _failed(
                FailureReason.CANNOT_UNDERSTAND,
                f"part Content-Type {media[:60]!r} is not application/dicom",
            )
        data = part.path.read_bytes()
        try:
            outcome = db.run(
                partial(
                    ingest_instance,
                    store=store,
                    data=data,
                    actor=actor,
                    source="stow",
                    expected_study_uid=expected_study_uid,
                    limits=limits,
                )
            )
        except dicom_io.DicomIOError as exc:
            return _failed(failure_reason_for(exc), str(exc), data)
        except StudyMismatchError as exc:
            return _failed(FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), data)
        if outcome.conflict:
            return _failed(
                FailureReason.DUPLICATE_SOP_INSTANCE,
                "SOP Instance UID already stored with different content",
                data,
            )
        return PartResult(outcome=outcome, sop_class_uid=outcome.sop_class_uid, failure=None)
    except StorageFullError:
        logger.error("STOW part %d: disk full", part.index)
        raise  # every later part would fail too: the request stops (507)
    except OSError:
        logger.exception("STOW part %d: storage error", part.index)
        return _failed(FailureReason.PROCESSING_FAILURE, "storage error")
    except Exception as exc:  # one bad part never fails the others; logged without PHI
        full = database_disk_full(exc)
        if full is not None:
            logger.error("STOW part %d: the database's disk is full", part.index)
            raise full from exc  # as for the file store: the request stops (507)
        logger.exception("STOW part %d: processing failure", part.index)
        return _failed(FailureReason.PROCESSING_FAILURE, "processing failure")


def store_limit_hint(part: ReceivedPart) -> str:
    return f"RADCHECK_STORAGE__MAX_UPLOAD_BYTES (this part has {part.size} bytes)"


def _failed(reason: FailureReason, detail: str, data: bytes | None = None) -> PartResult:
    cls, inst = peek_sop_uids(data) if data is not None else (None, None)
    failure = StowFailure(reason=reason, sop_class_uid=cls, sop_instance_uid=inst)
    return PartResult(outcome=None, sop_class_uid=cls, failure=failure, detail=detail)
