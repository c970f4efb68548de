"""Reading and validating one DICOM instance (header-only fast path by default).

Every failure, whatever the input, surfaces as a :class:`~dicom_io.errors.DicomIOError` subclass.
"""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError as PydicomInvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import pixel_array as pydicom_pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_io.errors import (
    DecodeError,
    DicomIOError,
    InvalidDicomError,
    InvalidElementError,
    MissingElementError,
    NotDicomError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from dicom_io.header import (
    Elements,
    HeaderView,
    dataset_attributes,
    header_facts,
    int_value,
    text_value,
)
from dicom_io.instance import DicomInstance, Eligibility, InstanceKind, JSONValue
from dicom_io.limits import (
    DEFAULT_LIMITS,
    DecodeLimits,
    check_inflated_size,
    check_pixel_size,
    check_value_lengths,
)
from dicom_io.selection import EligibilityPolicy, SelectionRules

__all__ = ["ParsedInstance", "decode_pixels", "parse", "read_instance"]

logger = logging.getLogger(__name__)

Source = bytes | bytearray | memoryview | Path

_PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00009: "DoubleFloatPixelData",
    0x7FE00008: "FloatPixelData",
}
_LONG_VRS = {
    b"OB",
    b"OW",
    b"OF",
    b"OD",
    b"OL",
    b"OV",
    b"SQ",
    b"UN",
    b"UC",
    b"UR",
    b"UT",
    b"SV",
    b"UV",
}
# Digits and dots (the standard), plus the letters, '-' and '_' of real-world hash UIDs; nothing that
# cannot stand in a URL path (e.g. '/'), since the API addresses studies by their UID.
_UID_TEXT = re.compile(r"^(?=.*[0-9A-Za-z])[0-9A-Za-z._-]{1,64}$")
_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_REQUIRED_IMAGE = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_KOS = "1.2.840.10008.5.1.4.1.1.88.59"
_PS_PREFIX = "1.2.840.10008.5.1.4.1.1.11."
_DOC_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
_MAX_DETAIL = 200
_DEFER_SIZE = "256 KB"
# Never converted: interpreter control flow.
_NOT_OURS = (KeyboardInterrupt, SystemExit, GeneratorExit)


def tag_name(tag: int) -> str:
    """pydicom-style tag label: ``(0028,0010) 'Rows'``."""
    keyword = keyword_for_tag(tag) or "Unknown"
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) '{keyword}'"


def _keyword_name(keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return tag_name(tag) if tag is not None else f"'{keyword}'"


def _detail(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


@dataclass(frozen=True, slots=True)
class _PixelElement:
    """What the header-only parse saw of the pixel data element without reading it."""

    keyword: str | None
    truncated_by: int = 0


@dataclass(frozen=True, slots=True)
class ParsedInstance:
    """A parsed Dataset with its validated instance (internal: never leaves dicom_io)."""

    dataset: Dataset
    instance: DicomInstance
    full: bool


@contextmanager
def _open(source: Source) -> Iterator[tuple[BinaryIO, int]]:
    if isinstance(source, Path):
        try:
            handle = source.open("rb")
        except OSError as exc:
            raise NotDicomError(
                f"Unable to open '{source.name}' for reading ({_detail(exc)}): "
                "check the path and permissions."
            ) from exc
        with handle:
            yield handle, os.fstat(handle.fileno()).st_size
    else:
        data = bytes(source)
        yield io.BytesIO(data), len(data)


def _peek_pixel_element(fp: BinaryIO, size: int, ds: Dataset) -> _PixelElement:
    """Look at the element header where a header-only parse stopped; detect a truncated file."""
    start = fp.tell()
    header = fp.read(12)
    if len(header) < 8:
        return _PixelElement(None)
    implicit, little = ds.original_encoding
    endian = "<" if little is not False else ">"
    group, elem = struct.unpack(endian + "HH", header[:4])
    keyword = _PIXEL_TAGS.get((group << 16) | elem)
    if keyword is None:
        return _PixelElement(None)
    if implicit:
        (length,) = struct.unpack(endian + "L", header[4:8])
        header_length = 8
    elif header[4:6] in _LONG_VRS:
        if len(header) < 12:
            return _PixelElement(keyword, truncated_by=12 - len(header))
        (length,) = struct.unpack(endian + "L", header[8:12])
        header_length = 12
    else:
        (length,) = struct.unpack(endian + "H", header[6:8])
        header_length = 8
    if length == 0xFFFFFFFF:  # encapsulated: walk the item headers (no pixel data is read)
        fp.seek(start + header_length)
        return _PixelElement(keyword, truncated_by=_encapsulated_shortfall(fp, size, ds))
    missing = start + header_length + length - size
    return _PixelElement(keyword, truncated_by=max(missing, 0))


_ITEM = 0xFFFEE000
_SEQUENCE_END = 0xFFFEE0DD
# Transfer syntaxes whose frames end with an EOI/EOC marker (FFD9): JPEG, JPEG-LS, JPEG 2000, HTJ2K.
_FFD9_SYNTAXES = frozenset(
    f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93, 201, 202, 203)
)


def _encapsulated_shortfall(fp: BinaryIO, size: int, ds: Dataset) -> int:
    """Bytes missing from encapsulated pixel data: items that run past the end of the file, no
    sequence delimiter, or a JPEG-family stream without its end marker (cut and re-wrapped).

    Reads 8 bytes per item and the last fragment's final bytes, never the pixel data itself.
    """
    last: tuple[int, int] | None = None
    first = True
    while True:
        header = fp.read(8)
        if len(header) < 8:
            return 8 - len(header)
        group, elem, length = (int(v) for v in struct.unpack("<HHL", header))
        tag = (group << 16) | elem
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM:
            return 0  # malformed, not short: pydicom reports it when the pixels are decoded
        position = fp.tell()
        if position + length > size:
            return position + length - size
        if not first and length:
            last = (position, length)
        first = False
        fp.seek(position + length)
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta is not None else ""
    if last is None or ts not in _FFD9_SYNTAXES:
        return 0
    position, length = last
    fp.seek(position + max(length - 8, 0))
    return 0 if b"\xff\xd9" in fp.read(min(length, 8)) else 1


def _read_dataset(
    source: Source, *, full: bool, limits: DecodeLimits
) -> tuple[Dataset, _PixelElement | None]:
    with _open(source) as (fp, size):
        # pydicom inflates a deflated data set whole, even for a header-only read: bound it first.
        check_inflated_size(fp, limits)
        try:
            # Header-only: stop at the pixel data and seek over any other large value (overlays,
            # private blobs, ICC profiles); pydicom reads a deferred value back on access.
            ds = dcmread(
                fp,
                stop_before_pixels=not full,
                defer_size=None if full else _DEFER_SIZE,
                force=False,
            )
        except PydicomInvalidDicomError as exc:
            raise NotDicomError(
                "Unable to read the input as DICOM: it lacks the 128-byte preamble and 'DICM' "
                "prefix of a DICOM Part 10 file (File Meta Information missing). Send a Part 10 "
                "file (PACS export, STOW-RS or C-STORE), not a raw data set or another format."
            ) from exc
        except (EOFError, struct.error) as exc:
            raise TruncatedFileError(
                "Unable to parse the DICOM data set: the file ends inside an element "
                f"({_detail(exc)}). The file is truncated; ask the sender to re-send it."
            ) from exc
        if full:
            return ds, None
        ts = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta is not None else None
        if ts == DeflatedExplicitVRLittleEndian:
            # The stream position refers to an inflated copy: nothing to peek at. Deflated files
            # are rare and small, so read them whole to see the pixel data element.
            fp.seek(0)
            return dcmread(fp, force=False), None
        return ds, _peek_pixel_element(fp, size, ds)


def _kind(sop_class: str, has_pixels: bool) -> InstanceKind:
    if sop_class == _KOS:
        return InstanceKind.KEY_OBJECT_SELECTION
    if sop_class.startswith(_SR_PREFIX):
        return InstanceKind.STRUCTURED_REPORT
    if sop_class.startswith(_PS_PREFIX):
        return InstanceKind.PRESENTATION_STATE
    if sop_class.startswith(_DOC_PREFIX):
        return InstanceKind.ENCAPSULATED_DOCUMENT
    if has_pixels or "Image Storage" in UID(sop_class).name:
        return InstanceKind.IMAGE
    return InstanceKind.OTHER


def _require_uid(ds: Elements, keyword: str) -> str:
    value = text_value(ds, keyword)
    if value is None:
        raise MissingElementError(
            f"The {_keyword_name(keyword)} element is missing or empty: every instance needs it "
            "to be stored and grouped. Fix the sending system's export and re-send the file."
        )
    # Lenient on purpose: real archives hold non-conformant UIDs (hex hashes); only values that
    # cannot serve as a key are refused.
    if not _UID_TEXT.match(value):
        raise InvalidElementError(
            f"The {_keyword_name(keyword)} value is not usable as a UID (found {len(value)} "
            "characters, or characters other than digits, letters, '.', '-' and '_'; expected at "
            "most 64 digits and dots). "
            "Fix the sending system's export and re-send the file."
        )
    return value


def _validate_image(ds: Elements, pixel_keyword: str | None) -> None:
    for keyword in _REQUIRED_IMAGE:
        if text_value(ds, keyword) is None:
            raise MissingElementError(
                f"The {_keyword_name(keyword)} element is missing or empty in an image instance: "
                "the pixel data cannot be interpreted without it. Re-send a complete image."
            )
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        number = int_value(ds, keyword)
        if number is None or number <= 0:
            raise InvalidElementError(
                f"The {_keyword_name(keyword)} value '{text_value(ds, keyword)}' is not a positive "
                "integer: the pixel data cannot be interpreted. Re-send a valid image."
            )
    if pixel_keyword is None:
        raise MissingElementError(
            "The image has no (7FE0,0010) 'PixelData' element (nor Float/Double Float Pixel "
            "Data): an image instance without pixels cannot be checked. Re-send the complete image."
        )


def _eligibility(
    attributes: Mapping[str, JSONValue], kind: InstanceKind, policy: EligibilityPolicy
) -> Eligibility:
    if kind is not InstanceKind.IMAGE:
        return Eligibility(False, (f"not an image ({kind.value.replace('_', ' ')})",))
    reasons = policy.reasons(attributes)
    return Eligibility(not reasons, reasons)


def decode_pixels(ds: Dataset, limits: DecodeLimits = DEFAULT_LIMITS) -> NDArray[np.generic]:
    """Decode the first frame of ``ds`` with pydicom's plugins (pylibjpeg, pyjpegls, ...).

    The decoded size is checked against ``limits`` from the header before any decoder runs.

    Raises :class:`UnsupportedTransferSyntaxError` when no installed plugin handles the transfer
    syntax and :class:`DecodeError` when the stream is corrupt.
    """
    ts = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta is not None else None
    ts_uid = UID(str(ts)) if ts else UID("1.2.840.10008.1.2")
    if not ts_uid.is_transfer_syntax:
        raise UnsupportedTransferSyntaxError(
            f"Unable to decode pixel data: the (0002,0010) 'TransferSyntaxUID' value '{ts_uid}' "
            "is not a known transfer syntax. Ask the sender to re-send the image in a standard "
            "syntax (JPEG 2000, JPEG-LS or uncompressed)."
        )
    if ts_uid.is_compressed:
        try:
            decoder = get_decoder(ts_uid)
        except NotImplementedError as exc:
            raise UnsupportedTransferSyntaxError(
                f"Unable to decode pixel data with transfer syntax '{ts_uid.name}' ({ts_uid}): "
                "pydicom has no decoder for it. Ask the sender to transcode to JPEG 2000, JPEG-LS "
                "or an uncompressed syntax."
            ) from exc
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies)
            raise UnsupportedTransferSyntaxError(
                f"Unable to decode pixel data with transfer syntax '{ts_uid.name}' ({ts_uid}): no "
                f"decoding plugin is installed ({missing}). Install pylibjpeg and its plugins."
            )
    check_pixel_size(ds, limits)
    frames = int_value(ds, "NumberOfFrames") or 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if frames > 1:
                return pydicom_pixel_array(ds, index=0)
            return ds.pixel_array
    except DicomIOError:
        raise
    except _NOT_OURS:
        raise
    except BaseException as exc:  # Rust decoders panic with pyo3's PanicException (BaseException)
        raise DecodeError(
            f"Unable to decode the (7FE0,0010) 'Pixel Data' of a '{ts_uid.name}' image "
            f"({_detail(exc)}). The pixel data is corrupt or truncated; ask the sender to re-send "
            "it."
        ) from exc


_ACR_NEMA_DATE = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
_DA = re.compile(r"^\d{8}$")


def _study_date(ds: Elements) -> str | None:
    """StudyDate as YYYYMMDD (the ACR-NEMA YYYY.MM.DD form converted); unusable: None."""
    value = text_value(ds, "StudyDate")
    if value is None:
        return None
    legacy = _ACR_NEMA_DATE.match(value)
    if legacy:
        value = "".join(legacy.groups())
    return value if _DA.match(value) else None


def _meta_transfer_syntax(ds: Dataset) -> str:
    meta = ds.file_meta if isinstance(ds.file_meta, FileMetaDataset) else None
    ts = text_value(meta, "TransferSyntaxUID") if meta is not None else None
    if ts is None:
        raise MissingElementError(
            "The File Meta Information has no (0002,0010) 'Transfer Syntax UID': the data set's "
            "encoding is unknown. Re-send the file with complete file meta."
        )
    return ts


def _build(
    dataset: Dataset,
    pixel: _PixelElement | None,
    limits: DecodeLimits,
    eligibility: EligibilityPolicy | None,
) -> DicomInstance:
    ts = _meta_transfer_syntax(dataset)
    ds = HeaderView(dataset)
    uids = {keyword: _require_uid(ds, keyword) for keyword in _REQUIRED_UIDS}
    check_value_lengths(ds)
    if pixel is None:  # full parse (or deflated): look at the data set itself
        present = next((kw for kw in _PIXEL_TAGS.values() if kw in dataset), None)
        pixel = _PixelElement(present)
    kind = _kind(uids["SOPClassUID"], pixel.keyword is not None)
    if kind is InstanceKind.IMAGE:
        _validate_image(ds, pixel.keyword)
        check_pixel_size(ds, limits)
        if pixel.truncated_by:
            raise TruncatedFileError(
                f"The (7FE0,0010) '{pixel.keyword}' element is cut short: the file ends "
                f"{pixel.truncated_by} bytes before the length its header announces (or its "
                "compressed stream before its end marker). The file is truncated; ask the sender "
                "to re-send it."
            )
    attributes = dataset_attributes(ds)
    return DicomInstance(
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        series_number=int_value(ds, "SeriesNumber"),
        instance_number=int_value(ds, "InstanceNumber"),
        modality=text_value(ds, "Modality"),
        accession_number=text_value(ds, "AccessionNumber"),
        study_date=_study_date(ds),
        study_description=text_value(ds, "StudyDescription"),
        transfer_syntax_uid=ts,
        kind=kind,
        header=header_facts(ds),
        attributes=attributes,
        eligibility=_eligibility(
            attributes, kind, eligibility or SelectionRules.default().eligibility_policy()
        ),
        patient_id=text_value(ds, "PatientID"),
        patient_name=text_value(ds, "PatientName"),
    )


def parse(
    source: Source,
    *,
    full: bool,
    limits: DecodeLimits = DEFAULT_LIMITS,
    eligibility: EligibilityPolicy | None = None,
) -> ParsedInstance:
    """Parse and validate ``source``; ``full`` reads the pixel data too (needed to decode).

    ``limits`` bound what the file may expand to (checked before inflating or decoding);
    ``eligibility`` decides whether an image may be the model image (default: the ``eligibility``
    list of the packaged ``data/default_selection.yaml``).
    """
    if not isinstance(source, Path | bytes | bytearray | memoryview):
        raise TypeError(f"source must be bytes or pathlib.Path, not {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            # pydicom warns (with the values) about non-conformant elements: keep PHI out of logs.
            warnings.simplefilter("ignore")
            ds, pixel = _read_dataset(source, full=full, limits=limits)
            instance = _build(ds, pixel, limits, eligibility)
    except DicomIOError:
        raise
    except _NOT_OURS:
        raise
    except BaseException as exc:  # Rust decoders panic with pyo3's PanicException (BaseException)
        # pydicom parses element values lazily: a corrupt value can raise almost anything here.
        raise InvalidDicomError(
            f"Unable to parse the DICOM data set ({_detail(exc)}). The file is corrupt; ask the "
            "sender to re-send it."
        ) from exc
    return ParsedInstance(ds, instance, full)


def read_instance(
    source: Source,
    *,
    decode: bool = False,
    limits: DecodeLimits = DEFAULT_LIMITS,
    eligibility: EligibilityPolicy | None = None,
) -> DicomInstance:
    """Parse and validate one DICOM Part 10 instance from a path or its bytes.

    By default only the header is read (parsing stops before the pixel data, whose length is
    checked against the file size). With ``decode=True`` the pixel data of images is also decoded,
    so a corrupt stream raises :class:`DecodeError` here rather than at render time.

    Raises only :class:`DicomIOError` subclasses (``TypeError`` for a source of the wrong type);
    :class:`LimitExceededError` when the file would inflate or decode past ``limits``.
    ``eligibility`` (a rules file's :meth:`SelectionRules.eligibility_policy`) decides whether an
    image may be the model image; by default the packaged rules file's list.
    """
    parsed = parse(source, full=decode, limits=limits, eligibility=eligibility)
    if decode and parsed.instance.kind is InstanceKind.IMAGE:
        decode_pixels(parsed.dataset, limits)
    logger.debug(
        "read instance kind=%s ts=%s", parsed.instance.kind, parsed.instance.transfer_syntax_uid
    )
    return parsed.instance
