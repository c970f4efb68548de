"""The relational schema (SQLAlchemy 2 typed ORM). Alembic owns the schema: see migrations/."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from app.db.audit_chain import ChainContent, advance

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the models use."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps no zone: UTC is implied)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use app.db.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class StudyStatus(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    CHECKED = "checked"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Role(StrEnum):
    ADMIN = "admin"
    INTEGRATION = "integration"
    RADIOLOGIST = "radiologist"


class ReviewDecision(StrEnum):
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"


class DismissReason(StrEnum):
    """Why a radiologist dismissed a flag (``other`` needs a comment)."""

    FALSE_POSITIVE = "false_positive"
    NOT_CLINICALLY_RELEVANT = "not_clinically_relevant"
    ALREADY_CORRECTED = "already_corrected"
    OTHER = "other"


def _ts(**kwargs: Any) -> Any:
    return mapped_column(UTCDateTime(), **kwargs)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    patient_name: Mapped[str | None] = mapped_column(String(324))
    study_date: Mapped[str | None] = mapped_column(String(8), index=True)
    study_description: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.RECEIVING, index=True)
    last_instance_at: Mapped[datetime] = _ts(default=utcnow)
    created_at: Mapped[datetime] = _ts(default=utcnow, index=True)
    updated_at: Mapped[datetime] = _ts(default=utcnow, onupdate=utcnow)

    series: Mapped[list[Series]] = relationship(
        back_populates="study", order_by="Series.series_number", cascade="all, delete-orphan"
    )
    reports: Mapped[list[Report]] = relationship(
        back_populates="study", order_by="Report.version", cascade="all, delete-orphan"
    )
    jobs: Mapped[list[CheckJob]] = relationship(
        back_populates="study", order_by="CheckJob.id", cascade="all, delete-orphan"
    )


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_number: Mapped[int | None] = mapped_column(Integer)
    modality: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = _ts(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(
        back_populates="series", order_by="Instance.instance_number", cascade="all, delete-orphan"
    )


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    transfer_syntax_uid: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_path: Mapped[str] = mapped_column(String(255))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    header: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    eligibility_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    source: Mapped[str] = mapped_column(String(16), default="upload")
    received_at: Mapped[datetime] = _ts(default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("study_id", "version", name="uq_reports_study_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    findings: Mapped[str | None] = mapped_column(Text)
    impression: Mapped[str | None] = mapped_column(Text)
    indication: Mapped[str | None] = mapped_column(Text)
    comparison: Mapped[str | None] = mapped_column(Text)
    technique: Mapped[str | None] = mapped_column(Text)
    raw_text: Mapped[str | None] = mapped_column(Text)
    # HL7 result status of this version: P preliminary, F final, C corrected, X cancelled.
    result_status: Mapped[str | None] = mapped_column(String(1))
    submitted_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = _ts(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="reports")


class CheckJob(Base):
    __tablename__ = "check_jobs"
    __table_args__ = (
        Index("ix_check_jobs_status_lease", "status", "lease_expires_at"),
        # At most one queued or running check per report version (concurrent requests share it).
        Index(
            "uq_check_jobs_active_report",
            "report_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = _ts()
    error: Mapped[str | None] = mapped_column(Text)
    stage_timings_ms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verdict_simple: Mapped[str | None] = mapped_column(String(1))
    verdict_complex: Mapped[str | None] = mapped_column(String(16))
    requested_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = _ts(default=utcnow)
    started_at: Mapped[datetime | None] = _ts()
    finished_at: Mapped[datetime | None] = _ts()

    study: Mapped[Study] = relationship(back_populates="jobs")
    report: Mapped[Report] = relationship()
    flags: Mapped[list[Flag]] = relationship(
        back_populates="job", order_by="Flag.id", cascade="all, delete-orphan"
    )
    groundings: Mapped[list[GroundingRecord]] = relationship(
        back_populates="job", order_by="GroundingRecord.position", cascade="all, delete-orphan"
    )


class Flag(Base):
    __tablename__ = "flags"
    __table_args__ = (
        UniqueConstraint("check_job_id", "key", name="uq_flags_job_key"),
        Index("ix_flags_study_job", "study_id", "check_job_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    check_job_id: Mapped[int] = mapped_column(
        ForeignKey("check_jobs.id", ondelete="CASCADE"), index=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    subtype: Mapped[str] = mapped_column(String(32))
    complex_class: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    rule_id: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    section: Mapped[str | None] = mapped_column(String(32))
    sentence_index: Mapped[int | None] = mapped_column(Integer)
    span_start: Mapped[int | None] = mapped_column(Integer)
    span_end: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = _ts(default=utcnow)

    job: Mapped[CheckJob] = relationship(back_populates="flags")
    reviews: Mapped[list[Review]] = relationship(
        back_populates="flag", order_by="Review.id", cascade="all, delete-orphan"
    )


class Review(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = _ts(default=utcnow)

    flag: Mapped[Flag] = relationship(back_populates="reviews")


class WorklistRow(Base):
    """One study's place on the worklist, kept with every write that changes it.

    Derived data: the flags of the study's latest check and how many of them nobody has decided on
    yet, by severity. ``app.services.worklist.refresh_worklist_row`` recomputes it from the flags and
    reviews whenever a check is queued or completed and whenever a flag is reviewed, so a worklist
    read sorts and counts one row per study instead of aggregating every flag.
    """

    __tablename__ = "study_worklist"
    __table_args__ = (Index("ix_study_worklist_order", "top_rank", "open_flags"),)

    study_id: Mapped[int] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    latest_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("check_jobs.id", ondelete="SET NULL")
    )
    flags: Mapped[int] = mapped_column(Integer, default=0)
    open_flags: Mapped[int] = mapped_column(Integer, default=0)
    open_critical: Mapped[int] = mapped_column(Integer, default=0)
    open_warning: Mapped[int] = mapped_column(Integer, default=0)
    open_info: Mapped[int] = mapped_column(Integer, default=0)
    top_rank: Mapped[int] = mapped_column(Integer, default=0)
    """Rank of the most severe open flag (critical 3, warning 2, info 1); 0 when none is open."""
    updated_at: Mapped[datetime] = _ts(default=utcnow, onupdate=utcnow)


class AuditEvent(Base):
    """Append-only (triggers refuse UPDATE and DELETE) and hash-chained (see app.db.audit_chain)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = _ts(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    study_id: Mapped[int | None] = mapped_column(Integer, index=True)
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))


class AuditChainHead(Base):
    """One row (id 1): the audit chain's last position and hash; updated with every audit insert."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


@event.listens_for(AuditEvent, "before_insert")
def _chain_audit_event(_mapper: Any, connection: Connection, target: AuditEvent) -> None:
    if target.at is None:
        target.at = utcnow()
    if target.details is None:
        target.details = {}
    ((target.seq, target.prev_hash, target.row_hash),) = advance(
        connection,
        [
            ChainContent(
                at=target.at,
                actor=target.actor,
                action=target.action,
                study_id=target.study_id,
                object_type=target.object_type,
                object_id=target.object_id,
                details=target.details,
            )
        ],
    )


class Hl7MessageState(StrEnum):
    WAITING = "waiting"  # stored; its study has not arrived yet
    MATCHED = "matched"  # stored as a report version of its study
    CANCELLED = "cancelled"  # result status X without report text: recorded, nothing to check
    MISMATCH = "mismatch"  # its study arrived but the patient identifiers differ: needs a person


class Hl7Message(Base):
    """One received ORU^R01 (idempotent on sender + MSH-10), waiting for its study or matched.

    Patient identifiers and the report text are kept only while the message waits for its study;
    once matched they live in the study and the report version, and are cleared here.
    """

    __tablename__ = "hl7_messages"
    __table_args__ = (
        UniqueConstraint("sender", "control_id", name="uq_hl7_messages_sender_control_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sender: Mapped[str] = mapped_column(String(255))
    control_id: Mapped[str] = mapped_column(String(199))
    # SHA-256 of the segments after MSH: a re-send matches; a reused MSH-10 does not.
    content_sha256: Mapped[str] = mapped_column(String(64))
    hl7_version: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    result_status: Mapped[str] = mapped_column(String(1))
    state: Mapped[str] = mapped_column(String(16), index=True)
    detail: Mapped[str | None] = mapped_column(Text)
    patient_ids: Mapped[list[Any] | None] = mapped_column(JSON)
    report_text: Mapped[str | None] = mapped_column(Text)
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL"), index=True
    )
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = _ts(default=utcnow)
    matched_at: Mapped[datetime | None] = _ts()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _ts(default=utcnow)
    last_used_at: Mapped[datetime | None] = _ts()
    revoked_at: Mapped[datetime | None] = _ts()


class WorkerHeartbeat(Base):
    """One row per worker process, refreshed while it runs (readiness: worker alive)."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = _ts(default=utcnow)
    last_seen_at: Mapped[datetime] = _ts(default=utcnow, index=True)


class User(Base):
    """A person who logs in (radiologist or admin); the password is stored as an argon2 hash."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = _ts()
    disabled_at: Mapped[datetime | None] = _ts()
    created_at: Mapped[datetime] = _ts(default=utcnow)
    last_login_at: Mapped[datetime | None] = _ts()


class UserSession(Base):
    """A login session: only the token's SHA-256 is stored; checked on every request."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _ts(default=utcnow)
    expires_at: Mapped[datetime] = _ts()
    last_seen_at: Mapped[datetime] = _ts(default=utcnow)
    revoked_at: Mapped[datetime | None] = _ts()

    user: Mapped[User] = relationship()


class GroundingRecord(Base):
    """One grounding attempt of a check: the boxes for one finding (original film pixels), how
    they were made, its outcome, and the relevance map as a heat-map PNG (unverified AI output)."""

    __tablename__ = "groundings"
    __table_args__ = (
        UniqueConstraint("check_job_id", "position", name="uq_groundings_job_position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    check_job_id: Mapped[int] = mapped_column(
        ForeignKey("check_jobs.id", ondelete="CASCADE"), index=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text)
    boxes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    side: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    film_width: Mapped[int | None] = mapped_column(Integer)
    film_height: Mapped[int | None] = mapped_column(Integer)
    map_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = _ts(default=utcnow)

    job: Mapped[CheckJob] = relationship(back_populates="groundings")


class ExportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ExportJob(Base):
    """One send of a check's results (TID 1500 SR, text SR, GSPS) to a PACS node.

    The object UIDs are fixed when the export is created, so every retry sends the same objects
    (a PACS stores an instance once). A failed attempt keeps its error and waits ``next_attempt_at``.
    """

    __tablename__ = "export_jobs"
    __table_args__ = (Index("ix_export_jobs_status_next", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    check_job_id: Mapped[int] = mapped_column(
        ForeignKey("check_jobs.id", ondelete="CASCADE"), index=True
    )
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=ExportStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    next_attempt_at: Mapped[datetime] = _ts(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = _ts()
    error: Mapped[str | None] = mapped_column(Text)
    uids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    objects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    predecessor_id: Mapped[int | None] = mapped_column(Integer)
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = _ts(default=utcnow)
    started_at: Mapped[datetime | None] = _ts()
    finished_at: Mapped[datetime | None] = _ts()

    job: Mapped[CheckJob] = relationship()


class PacsRetrieval(Base):
    """One pull of a study from a configured PACS node (``POST /api/v1/pacs/retrieve``), with its
    progress: instances found, stored, and failed."""

    __tablename__ = "pacs_retrievals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    studies: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = _ts(default=utcnow)
    started_at: Mapped[datetime | None] = _ts()
    finished_at: Mapped[datetime | None] = _ts()
    # run by a worker (or the CLI) under a lease; a running row whose lease expired is claimed again
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = _ts()
