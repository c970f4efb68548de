"""Handing the audit trail to an auditor: verify its hash chain, export it with IHE ATNA event kinds."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.audit_chain import GENESIS, row_digest
from app.db.models import AuditChainHead, AuditEvent, Study
from app.services.errors import InvalidInputError, NotFoundError

__all__ = ["ATNA_EVENTS", "ChainReport", "atna_event", "export_events", "verify_chain"]

ATNA_EVENTS: dict[str, tuple[str, str]] = {
    "user_authentication": ("110114", "User Authentication"),
    "patient_record": ("110110", "Patient Record"),
    "instances_accessed": ("110103", "DICOM Instances Accessed"),
    "instances_transferred": ("110104", "DICOM Instances Transferred"),
    "export": ("110106", "Export"),
    "security_alert": ("110113", "Security Alert"),
    "query": ("110112", "Query"),
}
"""IHE ATNA / DICOM PS3.15 audit event ids (DCM codes) by the kind RadCheck exports."""

# The RadCheck action (or its prefix before the first dot) -> ATNA event kind and action code
# (C create, R read, U update, D delete, E execute).
_ACTION_KINDS: dict[str, tuple[str, str]] = {
    "apikey.created": ("security_alert", "C"),
    "apikey.revoked": ("security_alert", "D"),
    "user": ("user_authentication", "E"),
    "session": ("user_authentication", "E"),
    "login": ("user_authentication", "E"),
    "studies.list": ("query", "E"),
    "study.read": ("instances_accessed", "R"),
    "check.read": ("patient_record", "R"),
    "instance.stored": ("instances_transferred", "C"),
    "instance.duplicate": ("instances_transferred", "R"),
    "instance.conflict": ("instances_transferred", "R"),
    "stow": ("instances_transferred", "C"),
    "sr": ("instances_transferred", "C"),
    "report": ("patient_record", "C"),
    "hl7": ("patient_record", "C"),
    "check": ("patient_record", "U"),
    "flag": ("patient_record", "U"),
    "audit": ("export", "R"),
    "backup": ("export", "R"),
    "export": ("export", "R"),
}


def atna_event(action: str) -> tuple[str, str, str]:
    """(ATNA event id, display name, action code) for a RadCheck audit action."""
    kind, code = _ACTION_KINDS.get(action) or _ACTION_KINDS.get(
        action.split(".", 1)[0], ("patient_record", "E")
    )
    event_id, name = ATNA_EVENTS[kind]
    return event_id, name, code


@dataclass
class ChainReport:
    rows: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_chain(session: Session, *, max_problems: int = 50) -> ChainReport:
    """Walk the chain in order: every row's hash, every link, no gaps, and the head."""
    report = ChainReport()
    expected_prev, expected_seq = GENESIS, 1

    def problem(text: str) -> None:
        if len(report.problems) < max_problems:
            report.problems.append(text)

    # The head first: rows appended while we read (after it) are left for the next run, and on
    # any isolation level every row up to the head's position is already committed.
    head = session.execute(select(AuditChainHead.seq, AuditChainHead.last_hash)).one_or_none()
    query = select(AuditEvent).order_by(AuditEvent.seq, AuditEvent.id)
    if head is not None:
        query = query.where((AuditEvent.seq <= head.seq) | AuditEvent.seq.is_(None))
    for row in session.scalars(query).yield_per(1000):
        report.rows += 1
        if row.seq is None or row.row_hash is None:
            problem(
                f"audit row id {row.id} has no chain position or hash (inserted around the chain)"
            )
            continue
        if row.seq != expected_seq:
            missing = (
                f"{expected_seq}"
                if row.seq == expected_seq + 1
                else f"{expected_seq}-{row.seq - 1}"
            )
            problem(f"audit position {missing} is missing before row id {row.id} (row deleted)")
        if row.prev_hash != expected_prev:
            problem(
                f"audit row id {row.id} (position {row.seq}) does not link to the row before it"
            )
        digest = row_digest(
            row.prev_hash or "",
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            study_id=row.study_id,
            object_type=row.object_type,
            object_id=row.object_id,
            details=row.details,
        )
        if digest != row.row_hash:
            problem(
                f"audit row id {row.id} (position {row.seq}) was edited: its hash does not match"
            )
        expected_prev, expected_seq = row.row_hash, row.seq + 1
    if head is None:
        problem("the audit chain head (table audit_chain, id 1) is missing")
    elif head.seq != expected_seq - 1 or head.last_hash != expected_prev:
        problem(
            f"the chain head says {head.seq} rows ending in {head.last_hash[:12]}..., the table "
            f"ends at position {expected_seq - 1}: rows were deleted from the end"
        )
    return report


EXPORT_FIELDS = [
    "seq",
    "at",
    "atna_event_id",
    "atna_event",
    "atna_action",
    "actor",
    "action",
    "study_instance_uid",
    "object_type",
    "object_id",
    "details",
    "row_hash",
]


def _events(
    session: Session,
    *,
    since: datetime | None,
    until: datetime | None,
    actor: str | None,
    study_uid: str | None,
) -> Iterator[dict[str, Any]]:
    query = select(AuditEvent, Study.study_instance_uid).outerjoin(
        Study, Study.id == AuditEvent.study_id
    )
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if study_uid is not None:
        study_id = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
        if study_id is None:
            raise NotFoundError(f"No study with StudyInstanceUID {study_uid!r}.")
        query = query.where(AuditEvent.study_id == study_id)
    for event, uid in session.execute(query.order_by(AuditEvent.seq)).yield_per(1000):
        event_id, name, code = atna_event(event.action)
        yield {
            "seq": event.seq,
            "at": event.at.isoformat(),
            "atna_event_id": event_id,
            "atna_event": name,
            "atna_action": code,
            "actor": event.actor,
            "action": event.action,
            "study_instance_uid": uid,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "details": event.details,
            "row_hash": event.row_hash,
        }


def export_events(
    session: Session,
    out: TextIO,
    *,
    fmt: str = "jsonl",
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    study_uid: str | None = None,
) -> int:
    """Write the matching events to ``out`` as JSON lines or CSV; returns how many."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInputError(f"Unknown export format {fmt!r}: use jsonl or csv.")
    rows = _events(session, since=since, until=until, actor=actor, study_uid=study_uid)
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "details": json.dumps(row["details"], sort_keys=True)})
            count += 1
        return count
    for row in rows:
        out.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        count += 1
    return count
