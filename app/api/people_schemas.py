"""Bodies of the people, worklist, review-history, report-diff and feedback routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import AI_NOTICE, Text
from app.db.models import DismissReason, JobStatus, ReviewDecision, Role, StudyStatus
from medvlm.taxonomy import ErrorSubtype, Severity


class LoginIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"username": "jdoe", "password": "correct horse battery"}]},
    )

    username: Text = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    name: str
    role: Role
    disabled: bool = False
    locked_until: datetime | None = None
    last_login_at: datetime | None = None


class SessionOut(BaseModel):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'. Shown once.")
    expires_at: datetime
    idle_timeout_s: float
    user: UserOut


class MeOut(BaseModel):
    kind: Literal["apikey", "session", "oidc"]
    name: str
    username: str | None
    role: Role
    actor: str


class WorklistItem(BaseModel):
    study_instance_uid: str
    accession_number: str | None
    study_date: str | None
    study_description: str | None
    status: StudyStatus
    created_at: datetime
    latest_check_id: int | None
    latest_check_status: JobStatus | None
    report_version: int | None
    flags: int = Field(description="Flags of the latest check.")
    open_flags: int = Field(description="Flags of the latest check nobody has decided on yet.")
    top_severity: Severity | None = Field(description="The most severe open flag's severity.")
    subtypes: list[ErrorSubtype]


class WorklistCounts(BaseModel):
    studies: int
    with_open_flags: int
    open_flags: int
    by_severity: dict[str, int]


class WorklistPage(BaseModel):
    items: list[WorklistItem]
    total: int
    limit: int
    offset: int
    counts: WorklistCounts
    notice: str = AI_NOTICE


class NextStudyOut(BaseModel):
    study_instance_uid: str | None = Field(description="None when nothing is left to review.")


class ReviewHistoryItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    decision: ReviewDecision
    reason: DismissReason | None
    comment: str | None
    reviewer: str
    created_at: datetime
    current: bool = Field(default=False, description="The latest decision supersedes earlier ones.")


class SectionDiff(BaseModel):
    section: str
    before: str | None
    after: str | None
    changed: bool
    unified_diff: str


class ReportDiffOut(BaseModel):
    from_version: int
    to_version: int
    sections: list[SectionDiff]


class FeedbackRow(BaseModel):
    group: str = Field(description="The rule id, or the subtype.")
    flags: int
    accepted: int
    dismissed: int
    open: int
    dismissed_share: float | None = Field(description="dismissed / (accepted + dismissed).")
    reasons: dict[str, int]


class FeedbackOut(BaseModel):
    by_rule: list[FeedbackRow]
    by_subtype: list[FeedbackRow]
    date_from: str | None
    date_to: str | None
