"""Typed, pydicom-free views of one DICOM instance: kind, header facts, eligibility."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

__all__ = [
    "DicomInstance",
    "Eligibility",
    "HeaderFacts",
    "InstanceKind",
    "JSONValue",
]

JSONValue: TypeAlias = "str | int | float | bool | list[JSONValue] | dict[str, JSONValue] | None"


class InstanceKind(StrEnum):
    """What an instance is, as far as the checker cares."""

    IMAGE = "image"
    STRUCTURED_REPORT = "structured_report"
    PRESENTATION_STATE = "presentation_state"
    KEY_OBJECT_SELECTION = "key_object_selection"
    ENCAPSULATED_DOCUMENT = "encapsulated_document"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Whether an instance can be the model image; when not, every reason why."""

    eligible: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, JSONValue]:
        return {"eligible": self.eligible, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """The header facts the report checker compares with the report text.

    ``portable`` is True when a description says portable/bedside/mobile, False when the view is PA
    (a PA film needs the wall stand), else None.
    """

    patient_sex: str | None = None
    patient_age_years: float | None = None
    view_position: str | None = None
    image_laterality: str | None = None
    body_part: str | None = None
    study_description: str | None = None
    series_description: str | None = None
    acquisition_datetime: datetime | None = None
    manufacturer: str | None = None
    modality: str | None = None
    portable: bool | None = None
    photometric: str | None = None
    rows: int | None = None
    columns: int | None = None

    def to_dict(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {}
        for key, value in asdict(self).items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(frozen=True, slots=True)
class DicomInstance:
    """One parsed and validated DICOM instance.

    ``attributes`` holds the JSON-serialisable element values that series selection needs, so the
    application can store them and run :func:`dicom_io.select_image` later without the file.
    ``patient_name`` and ``patient_id`` are kept out of ``repr``: logging an instance leaks no PHI.
    """

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    instance_number: int | None
    modality: str | None
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    transfer_syntax_uid: str
    kind: InstanceKind
    header: HeaderFacts
    attributes: dict[str, JSONValue]
    eligibility: Eligibility
    patient_id: str | None = field(default=None, repr=False)
    patient_name: str | None = field(default=None, repr=False)

    def to_dict(self, *, include_phi: bool = False) -> dict[str, JSONValue]:
        """JSON-serialisable view; patient name and ID only when ``include_phi`` is set."""
        out: dict[str, JSONValue] = {
            "sop_instance_uid": self.sop_instance_uid,
            "sop_class_uid": self.sop_class_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "instance_number": self.instance_number,
            "modality": self.modality,
            "accession_number": self.accession_number,
            "study_date": self.study_date,
            "study_description": self.study_description,
            "transfer_syntax_uid": self.transfer_syntax_uid,
            "kind": self.kind.value,
            "header": self.header.to_dict(),
            "attributes": dict(self.attributes),
            "eligibility": self.eligibility.to_dict(),
        }
        if include_phi:
            out["patient_id"] = self.patient_id
            out["patient_name"] = self.patient_name
        return out
