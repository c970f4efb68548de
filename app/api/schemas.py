"""Request and response bodies of the HTTP API (with OpenAPI examples)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field

from app.api.text_guard import unsafe_text
from app.db.models import (
    DismissReason,
    ExportStatus,
    JobStatus,
    ReviewDecision,
    StudyStatus,
)
from app.settings import ExportMode
from dicom_io import InstanceKind
from medvlm.checking.grounding import GroundingStatus
from medvlm.reports import REPORT_FIELDS, ReportInput
from medvlm.taxonomy import ComplexClass, ErrorSubtype, FlagSource, Severity

MAX_ID = 2**31 - 1  # ids, versions and offsets are 32-bit integers in the database


def _no_nul(value: str | None) -> str | None:
    if value is not None:
        problem = unsafe_text(value)
        if problem is not None:
            raise ValueError(problem)
    return value


# Text fields: the JSON guard (app/api/text_guard.py) refuses these for every request; the schema
# says it again so the rule is in the OpenAPI document's types and holds outside HTTP too.
Text = Annotated[str, AfterValidator(_no_nul)]
# A hard ceiling per field; the report's real limit is RADCHECK_CHECKS__MAX_REPORT_CHARS (413).
MAX_FIELD_CHARS = 1_000_000
UidPath = Annotated[
    str,
    Path(
        pattern=r"^[0-9A-Za-z._-]{1,64}$",
        description="A DICOM UID (digits and dots; at most 64 characters)",
        examples=["1.2.826.0.1.3680043.8.498.1"],
    ),
]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]

AI_NOTICE = (
    "Unverified AI output: flags are suggestions for a radiologist to review, not findings. "
    "RadCheck is research software and is not for direct clinical care."
)


class InstanceResult(BaseModel):
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    kind: InstanceKind = Field(examples=["image"])
    stored: bool = Field(description="False when this SOP Instance UID was already stored.")
    eligible_for_model: bool
    reasons: list[str] = Field(default_factory=list)


class RejectedFile(BaseModel):
    filename: str | None
    type: str
    detail: str


class UploadResponse(BaseModel):
    accepted: list[InstanceResult]
    rejected: list[RejectedFile]


class ReportIn(BaseModel):
    """A report: the sections, or the raw text (which RadCheck splits into sections), not both.

    The fields and the rule are ``medvlm.reports.ReportInput``'s (``REPORT_FIELDS``): a section
    field sent next to ``text`` is refused (422), never dropped; the report needs FINDINGS or
    IMPRESSION text (as fields, or as headed sections of ``text``; unheaded text is FINDINGS).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "findings": "Heart size is normal. There is a small right pleural effusion.",
                    "impression": "Small right pleural effusion.",
                    "indication": "Shortness of breath.",
                },
                {
                    "text": "FINDINGS: The lungs are clear. No pneumothorax.\n"
                    "IMPRESSION: No acute cardiopulmonary process."
                },
            ]
        },
    )

    findings: Text | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    impression: Text | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    indication: Text | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    comparison: Text | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    technique: Text | None = Field(default=None, max_length=MAX_FIELD_CHARS)
    text: Text | None = Field(
        default=None, max_length=MAX_FIELD_CHARS, description="The raw report text."
    )
    accession_number: Text | None = Field(default=None, max_length=64)
    result_status: Literal["P", "F", "C"] | None = Field(
        default=None, description="HL7 result status: P preliminary, F final, C corrected."
    )

    def report_input(self) -> ReportInput:
        """The report fields, for the rule every door shares."""
        return ReportInput(**{name: getattr(self, name) for name in REPORT_FIELDS})


class ReportOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    version: int
    accession_number: str | None
    findings: str | None
    impression: str | None
    indication: str | None
    comparison: str | None
    technique: str | None
    result_status: Literal["P", "F", "C", "X"] | None = Field(
        description="HL7 result status of this version: P preliminary, F final, C corrected, "
        "X cancelled (null: not given)."
    )
    submitted_by: str | None
    created_at: datetime


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})

    report_version: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Default: the latest report version."
    )


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    decision: ReviewDecision
    reason: DismissReason | None = None
    comment: str | None
    reviewer: str
    created_at: datetime


class FlagBox(BaseModel):
    """A box on the film for a flag (unverified AI output), in original film pixels."""

    box: list[float] = Field(
        min_length=4,
        max_length=4,
        description="[x0, y0, x1, y1] in pixels of the original film (x right, y down).",
        examples=[[412.0, 980.5, 806.0, 1402.0]],
    )
    label: str = Field(examples=["pleural effusion"])
    space: Literal["original_pixels"] = "original_pixels"
    source: Literal["relevance", "model"] = Field(
        description="relevance (a relevance map of the model's answer) or model (a box-native model)",
        examples=["relevance"],
    )
    method: str = Field(examples=["gradient_x_input"])
    mass_fraction: float | None = Field(
        default=None, description="Share of the map's positive relevance inside the box."
    )
    grounding_id: int | None = None
    heatmap_url: str | None = Field(
        default=None, description="The relevance map as an RGBA PNG overlay (film aspect)."
    )
    ai_generated: Literal[True] = True


def boxes_of(evidence: dict[str, Any]) -> list[FlagBox]:
    """The boxes a flag's evidence carries (none for flags without grounding)."""
    raw = evidence.get("boxes")
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("box"), list):
            out.append(FlagBox.model_validate({k: v for k, v in item.items() if k in _BOX_KEYS}))
    return out


class SuggestionOut(BaseModel):
    """A suggested correction of one sentence; ``applied`` is always false."""

    section: str
    sentence_index: int
    original: str
    suggested: str | None = Field(description="The rewritten sentence, when one follows")
    change: str = Field(examples=["side: left -> right (as impression sentence 1)"])
    applied: Literal[False] = False


class FlagFields(BaseModel):
    """What every flag says, stored (``FlagOut``) or not (``/check-report``)."""

    subtype: ErrorSubtype = Field(examples=["laterality"])
    complex_class: ComplexClass = Field(examples=["substitute"])
    severity: Severity = Field(examples=["critical"])
    source: FlagSource = Field(examples=["text_rule"])
    rule_id: str
    message: str
    section: str | None
    sentence_index: int | None


class FlagOut(FlagFields):
    model_config = ConfigDict(from_attributes=True)

    id: int
    check_job_id: int
    span_start: int | None
    span_end: int | None
    confidence: float
    evidence: dict[str, Any]
    reviews: list[ReviewOut] = Field(default_factory=list)

    @computed_field(  # type: ignore[prop-decorator]
        description=(
            "Suggested corrections (both readings of a contradiction: change this sentence or "
            "its counterpart). Unverified AI output, never applied to the report."
        )
    )
    @property
    def suggestions(self) -> list[SuggestionOut]:
        raw = self.evidence.get("suggestions", [])
        return [SuggestionOut.model_validate(s) for s in raw] if isinstance(raw, list) else []

    ai_generated: Literal[True] = True
    verification_status: Literal["unverified", "reviewed"] = "unverified"
    boxes: list[FlagBox] = Field(
        default_factory=list,
        description="Where on the film the flag's finding is (original pixels), when grounded.",
    )


_BOX_KEYS = frozenset(FlagBox.model_fields)


class GroundingOut(BaseModel):
    """One grounding attempt of a check (unverified AI output)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    check_job_id: int
    position: int
    target: str = Field(examples=["pleural_effusion"])
    label: str
    source: Literal["relevance", "model"] = Field(examples=["relevance"])
    method: str = Field(examples=["gradient_x_input"])
    status: GroundingStatus = Field(description="ok, no_box or failed", examples=["ok"])
    error: str | None
    question: str
    boxes: list[dict[str, Any]]
    statistics: dict[str, Any]
    side: dict[str, Any] | None
    film_width: int | None
    film_height: int | None
    heatmap_url: str | None = None
    ai_generated: Literal[True] = True


class CheckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    report_id: int
    status: JobStatus = Field(examples=["succeeded"])
    attempts: int
    max_attempts: int
    error: str | None
    verdict_simple: Literal["Y", "N"] | None = Field(
        description="Y: the report probably has an error."
    )
    verdict_complex: ComplexClass | None
    stage_timings_ms: dict[str, Any]
    provenance: dict[str, Any]
    selection: dict[str, Any]
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    flags: list[FlagOut] = Field(default_factory=list)
    groundings: list[GroundingOut] = Field(default_factory=list)
    notice: str = AI_NOTICE


class ImageOut(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    instance_number: int | None
    modality: str | None
    kind: InstanceKind
    eligible_for_model: bool
    reasons: list[str]
    header: dict[str, Any]
    sha256: str
    received_at: datetime


class StudySummary(BaseModel):
    study_instance_uid: str
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    status: StudyStatus
    images: int
    report_versions: int
    latest_check_status: JobStatus | None
    open_flags: int
    created_at: datetime
    last_instance_at: datetime


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    limit: int
    offset: int


class StudyDetail(BaseModel):
    study_instance_uid: str
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    status: StudyStatus
    created_at: datetime
    last_instance_at: datetime
    images: list[ImageOut]
    reports: list[ReportOut]
    checks: list[CheckOut]
    notice: str = AI_NOTICE


class ReviewIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"decision": "accepted", "comment": "Side corrected."}]},
    )

    decision: Literal["accepted", "dismissed"]
    reason: (
        Literal["false_positive", "not_clinically_relevant", "already_corrected", "other"] | None
    ) = Field(default=None, description="Why a flag was dismissed ('other' needs a comment).")
    comment: Text | None = Field(default=None, max_length=5_000)


class HeaderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_sex: Literal["M", "F", "O"] | None = None
    patient_age_years: float | None = Field(default=None, ge=0, le=150)
    view_position: Text | None = Field(default=None, max_length=16, examples=["PA"])
    body_part: Text | None = Field(default=None, max_length=64, examples=["CHEST"])
    image_laterality: Text | None = Field(default=None, max_length=4)
    portable: bool | None = None
    modality: Text | None = Field(default=None, max_length=16)


class CheckReportIn(ReportIn):
    """A report to check without storing it (the evaluation tool's and dictation's door)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "findings": "There is a small left pleural effusion.",
                    "impression": "Small right pleural effusion.",
                    "header": {"patient_sex": "F", "view_position": "PA"},
                }
            ]
        },
    )

    header: HeaderIn | None = None


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessOut(BaseModel):
    status: Literal["ready", "not_ready"]
    database: bool
    schema_current: bool
    worker_alive: bool
    detail: list[str] = Field(default_factory=list)


class ExportObjectOut(BaseModel):
    """One DICOM object an export sends (its UIDs, as stored in the PACS)."""

    kind: Literal["measurement_report", "text_report", "presentation_state"]
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str


class ExportOut(BaseModel):
    """A send of a check's results to a PACS node (TID 1500 SR, text SR, GSPS): unverified AI
    output, marked PRELIMINARY / UNVERIFIED in the objects themselves."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    check_job_id: int
    destination: str = Field(description="RADCHECK_PACS__NODES name")
    method: Literal["stow-rs", "c-store"]
    trigger: ExportMode = Field(description="manual, auto_on_complete or after_accept")
    status: ExportStatus
    attempts: int
    max_attempts: int
    error: str | None = Field(description="The last failed attempt's error (kept after a retry)")
    next_attempt_at: datetime | None
    predecessor_id: int | None = Field(
        description="The earlier export these objects supersede (Predecessor Documents Sequence)"
    )
    objects: list[ExportObjectOut] = Field(description="Filled in once built")
    requested_by: str
    created_at: datetime
    finished_at: datetime | None
    ai_generated: Literal[True] = True
    verification_status: Literal["unverified"] = "unverified"
    disclaimer: str = (
        "Unverified AI output: the exported objects are marked PRELIMINARY and UNVERIFIED; "
        "a radiologist must review every flag."
    )
