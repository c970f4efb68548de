"""Report intake from the RIS (HL7 v2 ORU^R01 over MLLP, or exported files): store, match, check.

One path for the listener and ``radcheck hl7 import``:

1. the message is mapped (``app.services.oru``) and its report text validated by the same rules as
   ``POST /api/v1/studies/{uid}/reports`` (``validate_submission``) before anything is stored;
2. in one transaction: the message row (unique on sender + MSH-10, so a re-sent message stores
   nothing new), and, when its study is here, a new report version (through ``submit_report``)
   with its result status and a check request; otherwise the message waits for its study;
3. ``match_waiting_reports`` (run by every worker) attaches waiting messages once their study has
   arrived, in the order they were received, and requests one check per study: the latest version.

The caller acknowledges only after step 2 has committed. Patient identifiers serve matching only:
they are never logged, and a waiting message's copy is cleared once it is matched.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.models import Hl7Message, Hl7MessageState, Instance, Report, Series, Study
from app.db.session import Database
from app.services import audit
from app.services.clock import db_now
from app.services.errors import InvalidInputError
from app.services.jobs import request_check
from app.services.oru import (
    AckCode,
    Hl7RejectError,
    MessageHeader,
    NotHl7Error,
    OruReport,
    build_ack,
    decode_message,
    parse_header,
    parse_oru,
)
from app.services.reports import (
    DEFAULT_MAX_REPORT_CHARS,
    ReportSubmission,
    submit_report,
    validate_submission,
)

__all__ = [
    "Intake",
    "IntakeConfig",
    "IntakeResult",
    "match_waiting_reports",
    "receive_message",
    "studies_waiting_for_report",
    "waiting_reports",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IntakeConfig:
    accession_field: str = "OBR-3"
    max_attempts: int = 3
    application: str = "RADCHECK"
    max_report_chars: int = DEFAULT_MAX_REPORT_CHARS


@dataclass(frozen=True)
class IntakeResult:
    """What happened to one message, and how to acknowledge it."""

    code: AckCode
    text: str
    outcome: str  # stored, waiting, duplicate, cancelled, rejected, error, not_hl7
    header: MessageHeader | None = None
    error_code: int | None = None
    message_id: int | None = None
    report_version: int | None = None
    check_job_id: int | None = None

    def ack(self, application: str = "RADCHECK") -> str:
        return build_ack(
            self.header, self.code, self.text, error_code=self.error_code, application=application
        )


class PatientMismatchError(Hl7RejectError):
    """The message's patient identifiers do not include the study's Patient ID."""


def _actor(header: MessageHeader, source: str) -> str:
    prefix = "hl7" if source == "mllp" else "hl7-import"
    return f"{prefix}:{header.sending_application or 'unknown'}"[:128]


def receive_message(
    db: Database, data: bytes, *, config: IntakeConfig, source: str
) -> IntakeResult:
    """Validate, store and (if its study is here) match one message; never raises for bad input."""
    text = decode_message(data)
    try:
        header = parse_header(text)
    except NotHl7Error as exc:
        return IntakeResult(AckCode.REJECT, f"Not an HL7 v2 message: {exc}.", "not_hl7")
    try:
        report = parse_oru(text, accession_field=config.accession_field)
        if report.result_status != "X" or report.text:
            validate_submission(
                ReportSubmission(text=report.text), max_chars=config.max_report_chars
            )
    except Hl7RejectError as exc:
        return IntakeResult(AckCode.REJECT, str(exc), "rejected", header, exc.code)
    except InvalidInputError as exc:
        return IntakeResult(
            AckCode.REJECT,
            f"The report text (OBX-5) cannot be used: {exc}",
            "rejected",
            header,
            102,
        )
    try:
        return db.run(lambda session: _store(session, report, config=config, source=source))
    except Hl7RejectError as exc:
        return IntakeResult(AckCode.REJECT, str(exc), "rejected", header, exc.code)
    except InvalidInputError as exc:
        return IntakeResult(AckCode.REJECT, str(exc), "rejected", header, 102)
    except Exception as exc:  # noqa: BLE001 - answered AE; the sender re-sends it later
        # Only the type: database errors can carry values from the statement.
        logger.error(
            "hl7 message control_id=%s: not stored (%s); answered AE",
            header.control_id,
            type(exc).__name__,
        )
        return IntakeResult(
            AckCode.ERROR,
            f"RadCheck could not store the report ({type(exc).__name__}); nothing was kept: "
            "send the message again later.",
            "error",
            header,
            207,
        )


class Intake:
    """``receive_message`` bound to a database, a configuration and a source (``mllp``, ``file``).

    SQLite has one writer at a time: concurrent connections would only contend for its lock (and
    could exhaust ``Database.run``'s retries, answering AE), so on SQLite this process stores one
    message at a time. PostgreSQL stores them concurrently.
    """

    def __init__(self, db: Database, config: IntakeConfig, *, source: str) -> None:
        self.db = db
        self.config = config
        self.source = source
        self._lock: threading.Lock | None = threading.Lock() if db.dialect == "sqlite" else None

    def __call__(self, data: bytes) -> IntakeResult:
        if self._lock is None:
            return receive_message(self.db, data, config=self.config, source=self.source)
        with self._lock:
            return receive_message(self.db, data, config=self.config, source=self.source)


def _find_study(session: Session, study_uid: str | None, accession: str | None) -> Study | None:
    if study_uid is not None:
        return session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    studies = session.scalars(select(Study).where(Study.accession_number == accession)).all()
    if len(studies) > 1:
        raise Hl7RejectError(
            f"The accession number matches {len(studies)} studies: send the Study Instance UID "
            "in ZDS-1 so RadCheck can tell them apart.",
            code=204,
        )
    return studies[0] if studies else None


def _check_patient(study: Study, patient_ids: list[str] | tuple[str, ...]) -> None:
    ours = (study.patient_id or "").strip()
    if ours and patient_ids and ours not in {p.strip() for p in patient_ids}:
        raise PatientMismatchError(
            "The patient identifiers in PID-3 do not include the Patient ID of the study with "
            "this accession number (DICOM 0010,0020): the report was not attached. Check the "
            "accession number and the patient.",
            code=204,
        )


def _duplicate(row: Hl7Message, report: OruReport) -> IntakeResult:
    header = report.header
    if row.content_sha256 != report.content_sha256:
        raise Hl7RejectError(
            f"MSH-10 was already used by a different message (stored as message {row.id}): "
            "give every message its own control ID. This one was not stored.",
            code=205,
        )
    logger.info("hl7 message %s control_id=%s: duplicate, kept once", row.id, header.control_id)
    return IntakeResult(
        AckCode.ACCEPT,
        f"Duplicate of message {row.id} (same MSH-10), already stored: nothing new was stored.",
        "duplicate",
        header,
        message_id=row.id,
    )


def _store(
    session: Session, report: OruReport, *, config: IntakeConfig, source: str
) -> IntakeResult:
    header = report.header
    same = and_(Hl7Message.sender == header.sender, Hl7Message.control_id == header.control_id)
    existing = session.scalar(select(Hl7Message).where(same))
    if existing is not None:
        return _duplicate(existing, report)
    row = Hl7Message(
        sender=header.sender,
        control_id=header.control_id[:199],
        content_sha256=report.content_sha256,
        hl7_version=header.version,
        source=source,
        accession_number=report.accession_number,
        study_instance_uid=report.study_instance_uid,
        result_status=report.result_status,
        state=Hl7MessageState.WAITING,
        received_at=db_now(session),
    )
    if session.get_bind().dialect.name == "postgresql":
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:  # the same message, stored a moment ago by another connection
            existing = session.scalar(select(Hl7Message).where(same))
            if existing is None:
                raise
            return _duplicate(existing, report)
    else:
        # SQLite serialises writers; a concurrent duplicate fails this transaction with an
        # IntegrityError and Database.run repeats it, finding the stored row. (No savepoint: under
        # pysqlite a SAVEPOINT before the first write would be the outermost transaction.)
        session.add(row)
        session.flush()
    actor = _actor(header, source)
    study = _find_study(session, report.study_instance_uid, report.accession_number)
    if study is None:
        if report.result_status == "X" and not report.text:
            row.state = Hl7MessageState.CANCELLED
            row.detail = "Cancelled (X) before its study arrived."
        else:
            row.patient_ids = list(report.patient_ids)
            row.report_text = report.text
            row.detail = "Waiting for the study's images."
        _audit_received(session, row, actor)
        logger.info(
            "hl7 message %s control_id=%s status=%s: stored, %s",
            row.id,
            header.control_id,
            row.result_status,
            row.state,
        )
        text = (
            "Cancellation recorded; the study has not arrived."
            if row.state == Hl7MessageState.CANCELLED
            else f"Stored as message {row.id}: waiting for the study's images, then checked."
        )
        return IntakeResult(AckCode.ACCEPT, text, str(row.state), header, message_id=row.id)
    stored = _attach(
        session,
        row,
        study,
        text=report.text,
        patient_ids=report.patient_ids,
        actor=actor,
        max_attempts=config.max_attempts,
        request=True,
    )
    _audit_received(session, row, actor)
    version = stored[0].version if stored[0] is not None else None
    job_id = stored[1]
    logger.info(
        "hl7 message %s control_id=%s status=%s: %s study id=%s version=%s check=%s",
        row.id,
        header.control_id,
        row.result_status,
        row.state,
        study.id,
        version,
        job_id,
    )
    if version is None:
        return IntakeResult(
            AckCode.ACCEPT, "Cancellation recorded.", "cancelled", header, message_id=row.id
        )
    return IntakeResult(
        AckCode.ACCEPT,
        f"Stored as report version {version}"
        + (f"; check {job_id} requested." if job_id is not None else "."),
        "stored",
        header,
        message_id=row.id,
        report_version=version,
        check_job_id=job_id,
    )


def _audit_received(session: Session, row: Hl7Message, actor: str) -> None:
    audit.record(
        session,
        actor=actor,
        action="hl7.received",
        study_id=row.study_id,
        object_type="hl7_message",
        object_id=row.id,
        details={
            "control_id": row.control_id,
            "result_status": row.result_status,
            "state": str(row.state),
            "source": row.source,
        },
    )


def _attach(
    session: Session,
    row: Hl7Message,
    study: Study,
    *,
    text: str,
    patient_ids: list[str] | tuple[str, ...],
    actor: str,
    max_attempts: int,
    request: bool,
) -> tuple[Report | None, int | None]:
    """Store the message as the study's next report version (and request its check)."""
    _check_patient(study, patient_ids)
    if row.result_status == "X" and not text:
        row.study_id = study.id
        row.matched_at = db_now(session)
        row.patient_ids = None
        row.report_text = None
        row.state = Hl7MessageState.CANCELLED
        row.detail = "Cancelled (X): no report text, nothing to check."
        audit.record(
            session,
            actor=actor,
            action="report.cancelled",
            study_id=study.id,
            object_type="hl7_message",
            object_id=row.id,
        )
        return None, None
    # submit_report locks the study row first (PostgreSQL); only then does this row point at the
    # study (its foreign key takes a share lock that would deadlock against that lock).
    report = submit_report(
        session,
        study_uid=study.study_instance_uid,
        submission=ReportSubmission(
            text=text, accession_number=row.accession_number, result_status=row.result_status
        ),
        actor=actor,
        max_chars=max(len(text), 1),  # checked against the configured limit when received
    )
    row.study_id = study.id
    row.matched_at = db_now(session)
    row.patient_ids = None
    row.report_text = None
    row.state = Hl7MessageState.MATCHED
    row.report_id = report.id
    row.detail = None
    job_id = None
    if request and row.result_status != "X":
        job, _ = request_check(
            session,
            study_uid=study.study_instance_uid,
            actor=actor,
            max_attempts=max_attempts,
            report_version=report.version,
        )
        job_id = job.id
    return report, job_id


def match_waiting_reports(session: Session, *, max_attempts: int, limit: int = 200) -> int:
    """Attach waiting messages whose study has arrived; returns how many were matched.

    Each message is claimed with a conditional update, so two workers never attach it twice. A
    study's messages are attached in the order received; one check is requested per study, for
    its latest version (earlier ones are superseded before any check ran).
    """
    pairs = session.execute(
        select(Hl7Message.id, Study.id)
        .join(
            Study,
            or_(
                and_(
                    Hl7Message.study_instance_uid.is_not(None),
                    Study.study_instance_uid == Hl7Message.study_instance_uid,
                ),
                and_(
                    Hl7Message.study_instance_uid.is_(None),
                    Study.accession_number == Hl7Message.accession_number,
                ),
            ),
        )
        .where(Hl7Message.state == Hl7MessageState.WAITING)
        .order_by(Hl7Message.id)
        .limit(limit)
    ).all()
    studies_of: dict[int, list[int]] = {}
    for message_id, study_id in pairs:
        studies_of.setdefault(message_id, []).append(study_id)
    latest: dict[int, tuple[Study, Hl7Message]] = {}
    matched = 0
    for message_id, study_ids in studies_of.items():
        claimed = session.execute(
            update(Hl7Message)
            .where(Hl7Message.id == message_id, Hl7Message.state == Hl7MessageState.WAITING)
            .values(state="matching")
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another worker has it
        row = session.get(Hl7Message, message_id)
        assert row is not None
        session.refresh(row)
        actor = f"hl7:{row.sender.split('|', 1)[0] or 'unknown'}"[:128]
        if len(study_ids) > 1:
            row.state = Hl7MessageState.MISMATCH
            row.detail = (
                f"The accession number matches {len(study_ids)} studies: resend the report "
                "with the Study Instance UID (ZDS-1)."
            )
            logger.warning("hl7 message %s: accession matches several studies", row.id)
            continue
        study = session.get(Study, study_ids[0])
        assert study is not None
        try:
            _check_patient(study, list(row.patient_ids or []))
        except Hl7RejectError as exc:
            row.state = Hl7MessageState.MISMATCH
            row.detail = str(exc)
            logger.warning(
                "hl7 message %s: not attached to study id=%s (patient)", row.id, study.id
            )
            continue
        _attach(
            session,
            row,
            study,
            text=row.report_text or "",
            patient_ids=list(row.patient_ids or []),
            actor=actor,
            max_attempts=max_attempts,
            request=False,
        )
        matched += 1
        logger.info("hl7 message %s: matched to study id=%s", row.id, study.id)
        if row.result_status != "X" and row.state == Hl7MessageState.MATCHED:
            latest[study.id] = (study, row)
        else:
            latest.pop(study.id, None)
    for study, row in latest.values():
        report = session.get(Report, row.report_id)
        assert report is not None
        request_check(
            session,
            study_uid=study.study_instance_uid,
            actor=f"hl7:{row.sender.split('|', 1)[0] or 'unknown'}"[:128],
            max_attempts=max_attempts,
            report_version=report.version,
        )
    return matched


def _page(
    session: Session, query: Any, count: Any, limit: int, offset: int
) -> tuple[list[Any], int]:
    total = session.scalar(count) or 0
    return list(session.scalars(query.limit(limit).offset(offset)).all()), total


def waiting_reports(session: Session, *, limit: int, offset: int) -> tuple[list[Hl7Message], int]:
    """Received reports whose study has not arrived (or could not be matched safely)."""
    where = Hl7Message.state.in_([Hl7MessageState.WAITING, Hl7MessageState.MISMATCH])
    return _page(
        session,
        select(Hl7Message).where(where).order_by(Hl7Message.received_at, Hl7Message.id),
        select(func.count(Hl7Message.id)).where(where),
        limit,
        offset,
    )


def studies_waiting_for_report(
    session: Session, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Studies with images but no report version yet."""
    no_report = ~exists().where(Report.study_id == Study.id)
    studies, total = _page(
        session,
        select(Study).where(no_report).order_by(Study.created_at.desc(), Study.id.desc()),
        select(func.count(Study.id)).where(no_report),
        limit,
        offset,
    )
    ids = [s.id for s in studies]
    images: dict[int, int] = {}
    if ids:
        images = {
            study_id: count
            for study_id, count in session.execute(
                select(Series.study_id, func.count(Instance.id))
                .join(Instance, Instance.series_id == Series.id)
                .where(Series.study_id.in_(ids))
                .group_by(Series.study_id)
            ).all()
        }
    return [
        {
            "study_instance_uid": s.study_instance_uid,
            "accession_number": s.accession_number,
            "status": s.status,
            "images": images.get(s.id, 0),
            "created_at": s.created_at,
            "last_instance_at": s.last_instance_at,
        }
        for s in studies
    ], total
