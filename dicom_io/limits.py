"""Bounds checked before anything expensive happens (issue 16, items 2 and 7).

- A Deflated Explicit VR Little Endian file is inflated here in bounded steps, counting its size,
  before pydicom inflates it whole: a 300 KB file may not cost gigabytes of memory.
- The decoded pixel size (Rows x Columns x frames x samples x bytes) is computed from the header
  before any decoder allocates it.
- The text values RadCheck stores are held to their VR's maximum length (PS3.5 table 6.2-1).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_io.errors import InvalidElementError, LimitExceededError
from dicom_io.header import Elements, int_value

__all__ = [
    "DEFAULT_LIMITS",
    "STORED_VRS",
    "DecodeLimits",
    "check_inflated_size",
    "check_pixel_size",
    "check_value_lengths",
    "pixel_bytes",
]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """How much a file may expand to: the inflated data set and the decoded pixels, in bytes."""

    max_inflated_bytes: int = 256 * MIB
    max_pixel_bytes: int = 512 * MIB

    def __post_init__(self) -> None:
        if self.max_inflated_bytes <= 0 or self.max_pixel_bytes <= 0:
            raise ValueError("DecodeLimits: both limits must be positive byte counts")


DEFAULT_LIMITS = DecodeLimits()

# The text elements RadCheck stores in sized columns (and indexes, matches reports on), with their
# value representation. Dates and numbers are parsed (a malformed one is stored as unknown), and the
# selection attributes live in JSON, so they are not refused here.
STORED_VRS: dict[str, str] = {
    "PatientName": "PN",
    "PatientID": "LO",
    "AccessionNumber": "SH",
    "StudyDescription": "LO",
    "Modality": "CS",
}
# PS3.5 table 6.2-1: maximum characters per value (PN: per component group).
_VR_MAX = {"PN": 64, "LO": 64, "SH": 16, "CS": 16}

_INFLATE_STEP = MIB
_READ_CHUNK = 64 * 1024
_LONG_META_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"}


def _values(raw: object) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, MultiValue | list | tuple):
        return [str(v) for v in raw]
    return [str(raw)]


def check_value_lengths(ds: Elements) -> None:
    """``InvalidElementError`` when a stored text element is longer than its VR allows."""
    for keyword, vr in STORED_VRS.items():
        limit = _VR_MAX[vr]
        for value in _values(ds.get(keyword)):
            parts = value.split("=") if vr == "PN" else [value]
            longest = max(len(p) for p in parts)
            if longest > limit or (vr == "PN" and len(parts) > 3):
                from pydicom.datadict import tag_for_keyword

                tag = tag_for_keyword(keyword) or 0
                per = " per component group" if vr == "PN" else ""
                raise InvalidElementError(
                    f"The ({tag >> 16:04X},{tag & 0xFFFF:04X}) '{keyword}' value is {longest} "
                    f"characters long; its VR {vr} allows at most {limit}{per} (DICOM PS3.5 "
                    "table 6.2-1). Fix the sending system's export and re-send the file."
                )


def pixel_bytes(ds: Elements) -> int:
    """Rows x Columns x frames x samples x bytes per sample, from the header (0 when unknown)."""
    rows = int_value(ds, "Rows") or 0
    columns = int_value(ds, "Columns") or 0
    frames = max(int_value(ds, "NumberOfFrames") or 1, 1)
    samples = max(int_value(ds, "SamplesPerPixel") or 1, 1)
    bits = int_value(ds, "BitsAllocated") or 0
    return rows * columns * frames * samples * ((bits + 7) // 8)


def check_pixel_size(ds: Elements, limits: DecodeLimits) -> None:
    """``LimitExceededError`` when decoding the pixel data would take more than the limit."""
    size = pixel_bytes(ds)
    if size > limits.max_pixel_bytes:
        raise LimitExceededError(
            f"The pixel data would decode to {size} bytes (Rows {int_value(ds, 'Rows')} x "
            f"Columns {int_value(ds, 'Columns')} x {int_value(ds, 'NumberOfFrames') or 1} "
            f"frames x {int_value(ds, 'SamplesPerPixel') or 1} samples x "
            f"{int_value(ds, 'BitsAllocated')} bits); the limit is {limits.max_pixel_bytes} bytes. "
            "A chest radiograph needs far less: the header is wrong, or the image is not one.",
            limit=limits.max_pixel_bytes,
            kind="pixel",
        )


def _meta_transfer_syntax(fp: BinaryIO) -> str | None:
    """The file meta's Transfer Syntax UID, leaving ``fp`` after the meta group (None: no meta)."""
    if fp.read(128) is None or fp.read(4) != b"DICM":
        return None
    ts: str | None = None
    while True:
        start = fp.tell()
        head = fp.read(6)
        if len(head) < 6:
            return ts
        group, element = struct.unpack("<HH", head[:4])
        if group != 0x0002:
            fp.seek(start)
            return ts
        vr = head[4:6]
        if vr in _LONG_META_VRS:
            rest = fp.read(6)
            if len(rest) < 6:
                return ts
            (length,) = struct.unpack("<L", rest[2:])
        else:
            rest = fp.read(2)
            if len(rest) < 2:
                return ts
            (length,) = struct.unpack("<H", rest)
        value = fp.read(length)
        if element == 0x0010:
            ts = value.decode("ascii", "replace").strip("\x00 ")


def check_inflated_size(fp: BinaryIO, limits: DecodeLimits) -> bool:
    """For a deflated file, inflate the data set in bounded steps and refuse it past the limit.

    Returns whether the file is deflated; ``fp`` is rewound to where it was. Memory stays at about
    one step (1 MiB) whatever the file inflates to.
    """
    origin = fp.tell()
    try:
        if _meta_transfer_syntax(fp) != DeflatedExplicitVRLittleEndian:
            return False
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        while not inflater.eof:
            chunk = fp.read(_READ_CHUNK)
            if not chunk:
                break
            pending = chunk
            while pending and not inflater.eof:
                total += len(inflater.decompress(pending, _INFLATE_STEP))
                if total > limits.max_inflated_bytes:
                    raise LimitExceededError(
                        "The deflated data set (Deflated Explicit VR Little Endian) inflates to "
                        f"more than {limits.max_inflated_bytes} bytes, the limit; refused before "
                        "it was inflated. Ask the sender to send the image uncompressed or in "
                        "JPEG 2000 / JPEG-LS.",
                        limit=limits.max_inflated_bytes,
                        kind="inflated",
                    )
                pending = inflater.unconsumed_tail
        return True
    except zlib.error:
        return True  # pydicom reports the corrupt stream with its own message
    finally:
        fp.seek(origin)
