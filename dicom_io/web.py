"""DICOMweb (PS3.18) building blocks without an HTTP server: status codes and DICOM JSON bodies.

The server side (routes, streaming) lives in the application; this module knows the standard's
vocabulary: STOW-RS failure reasons, the STOW-RS response data set, QIDO-RS result data sets and
WADO-RS metadata, all as DICOM JSON (PS3.18 F.2).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError as PydicomInvalidDicomError

from dicom_io.errors import (
    DicomIOError,
    InvalidElementError,
    LimitExceededError,
    MissingElementError,
    NotDicomError,
    UnsupportedTransferSyntaxError,
)

__all__ = [
    "QIDO_ATTRIBUTES",
    "FailureReason",
    "StowFailure",
    "StowReference",
    "dataset_json",
    "failure_reason_for",
    "instance_metadata",
    "peek_sop_uids",
    "stow_response",
]


class FailureReason(IntEnum):
    """STOW-RS / C-STORE failure reasons (PS3.18 table I.2-1 and PS3.4 annex B)."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122


def failure_reason_for(exc: DicomIOError) -> FailureReason:
    """The failure reason for a validation error raised by :func:`dicom_io.read_instance`."""
    if isinstance(exc, UnsupportedTransferSyntaxError):
        return FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED
    if isinstance(exc, LimitExceededError):
        return FailureReason.OUT_OF_RESOURCES
    if isinstance(exc, MissingElementError | InvalidElementError):
        return FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(exc, NotDicomError):
        return FailureReason.CANNOT_UNDERSTAND
    return FailureReason.CANNOT_UNDERSTAND


@dataclass(frozen=True)
class StowReference:
    """One stored instance in a STOW-RS response."""

    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str | None


@dataclass(frozen=True)
class StowFailure:
    """One instance that was not stored (UIDs unknown when the part could not be parsed)."""

    reason: FailureReason
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


def peek_sop_uids(data: bytes) -> tuple[str | None, str | None]:
    """SOP Class and SOP Instance UID of a part that failed validation, best effort (never raises)."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data),
            force=True,
            stop_before_pixels=True,
            specific_tags=[0x00080016, 0x00080018],
        )
        cls = ds.get("SOPClassUID")
        inst = ds.get("SOPInstanceUID")
    except (PydicomInvalidDicomError, ValueError, TypeError, KeyError, AttributeError, OSError):
        return None, None
    except Exception:  # noqa: BLE001 - pydicom raises many kinds on hostile bytes; best effort only
        return None, None

    def clean(value: object) -> str | None:
        text = str(value).strip() if value is not None else ""
        return text if 0 < len(text) <= 64 and all(c in "0123456789." for c in text) else None

    return clean(cls), clean(inst)


def stow_response(
    references: Sequence[StowReference],
    failures: Sequence[StowFailure],
    *,
    study_retrieve_url: str | None = None,
) -> dict[str, Any]:
    """The STOW-RS response data set (PS3.18 10.5.3) as DICOM JSON."""
    ds = Dataset()
    if study_retrieve_url:
        ds.RetrieveURL = study_retrieve_url
    referenced = []
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        if ref.retrieve_url:
            item.RetrieveURL = ref.retrieve_url
        referenced.append(item)
    failed = []
    for fail in failures:
        item = Dataset()
        if fail.sop_class_uid:
            item.ReferencedSOPClassUID = fail.sop_class_uid
        if fail.sop_instance_uid:
            item.ReferencedSOPInstanceUID = fail.sop_instance_uid
        item.FailureReason = int(fail.reason)
        failed.append(item)
    if referenced:
        ds.ReferencedSOPSequence = referenced
    if failed:
        ds.FailedSOPSequence = failed
    result: dict[str, Any] = ds.to_json_dict()
    return result


# QIDO-RS: attribute keyword -> (tag, VR), for the values RadCheck keeps in its index.
QIDO_ATTRIBUTES: Mapping[str, tuple[str, str]] = {
    "StudyInstanceUID": ("0020000D", "UI"),
    "SeriesInstanceUID": ("0020000E", "UI"),
    "SOPInstanceUID": ("00080018", "UI"),
    "SOPClassUID": ("00080016", "UI"),
    "PatientID": ("00100020", "LO"),
    "PatientName": ("00100010", "PN"),
    "StudyDate": ("00080020", "DA"),
    "AccessionNumber": ("00080050", "SH"),
    "StudyDescription": ("00081030", "LO"),
    "ModalitiesInStudy": ("00080061", "CS"),
    "Modality": ("00080060", "CS"),
    "SeriesNumber": ("00200011", "IS"),
    "InstanceNumber": ("00200013", "IS"),
    "NumberOfStudyRelatedSeries": ("00201206", "IS"),
    "NumberOfStudyRelatedInstances": ("00201208", "IS"),
    "NumberOfSeriesRelatedInstances": ("00201209", "IS"),
    "RetrieveURL": ("00081190", "UR"),
    "TransferSyntaxUID": ("00020010", "UI"),
    "Rows": ("00280010", "US"),
    "Columns": ("00280011", "US"),
    "ViewPosition": ("00185101", "CS"),
    "BodyPartExamined": ("00180015", "CS"),
    "ImageType": ("00080008", "CS"),
    "PatientSex": ("00100040", "CS"),
    "StudyTime": ("00080030", "TM"),
    "ReferringPhysicianName": ("00080090", "PN"),
    "StudyID": ("00200010", "SH"),
    "SeriesDescription": ("0008103E", "LO"),
}


def dataset_json(values: Mapping[str, object]) -> dict[str, Any]:
    """DICOM JSON for ``keyword -> value`` (None and empty values are sent as empty elements)."""
    out: dict[str, Any] = {}
    for keyword, value in values.items():
        tag, vr = QIDO_ATTRIBUTES[keyword]
        element: dict[str, Any] = {"vr": vr}
        items: Iterable[object]
        if value is None or value == "" or value == []:
            out[tag] = element
            continue
        items = value if isinstance(value, list | tuple) else [value]
        if vr == "PN":
            element["Value"] = [{"Alphabetic": str(v)} for v in items]
        elif vr in ("IS", "US"):
            element["Value"] = [int(str(v)) for v in items]
        else:
            element["Value"] = [str(v) for v in items]
        out[tag] = element
    return out


def instance_metadata(path: Path, *, bulk_data_uri: str | None = None) -> dict[str, Any]:
    """WADO-RS metadata of one stored file: its data set as DICOM JSON without pixel data.

    Bulk data (pixel data and other large binary values) is left out, or referenced by
    ``bulk_data_uri`` when given. Raises :class:`DicomIOError` when the file cannot be read.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (PydicomInvalidDicomError, OSError, ValueError) as exc:
        raise DicomIOError(f"Cannot read stored instance for metadata: {exc}") from exc

    def bulk(_element: object) -> str:
        return bulk_data_uri or ""

    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=4096, bulk_data_element_handler=bulk
    )
    if bulk_data_uri is None:
        result = {tag: el for tag, el in result.items() if el.get("BulkDataURI") != ""}
    if ds.file_meta is not None and "TransferSyntaxUID" in ds.file_meta:
        result["00020010"] = {"vr": "UI", "Value": [str(ds.file_meta.TransferSyntaxUID)]}
    return result
