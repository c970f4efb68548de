"""The radiologist's worklist: studies with open flags first, by the most severe open flag, then age.

"Open" means a flag of the study's latest check that nobody has decided on yet. Each study's counts
live in one ``study_worklist`` row, recomputed by the writes that change them (see
``refresh_worklist_row``), so a read is an ordered scan of one row per study. Each read is audited
by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import Select, and_, case, delete, exists, func, insert, literal, select
from sqlalchemy.orm import Session

from app.db.models import (
    CheckJob,
    Flag,
    Report,
    Review,
    Study,
    UTCDateTime,
    WorklistRow,
    utcnow,
)

__all__ = [
    "SEVERITY_RANK",
    "WorklistFilter",
    "lock_study",
    "next_unreviewed",
    "rebuild_worklist",
    "refresh_worklist_row",
    "worklist",
]

SEVERITY_RANK = {"critical": 3, "warning": 2, "info": 1}
_RANK_NAME = {v: k for k, v in SEVERITY_RANK.items()}


@dataclass(frozen=True)
class WorklistFilter:
    status: str | None = None
    severity: str | None = None
    subtype: str | None = None
    review: Literal["reviewed", "unreviewed"] | None = None
    date_from: date | None = None
    date_to: date | None = None
    accession_number: str | None = None
    limit: int = 50
    offset: int = 0


_OPEN_COLUMN = {
    "critical": WorklistRow.open_critical,
    "warning": WorklistRow.open_warning,
    "info": WorklistRow.open_info,
}


def lock_study(session: Session, study_id: int) -> bool:
    """Lock the study's row for the rest of the transaction (``FOR UPDATE`` on PostgreSQL; SQLite
    already serialises writers); False when there is no such study.

    The lock order of every writer that changes a study's flags, reviews or checks: the study row
    first, then the audit chain's head (taken by the first audit row flushed). A writer that locked
    the study only after flushing its audit row would deadlock with one that holds the study and
    waits for the chain's head (``submit_report``, ``request_check``): PostgreSQL aborts one of
    them, and the API answers 503.
    """
    lock = select(Study.id).where(Study.id == study_id)
    if session.get_bind().dialect.name == "postgresql":
        lock = lock.with_for_update()
    return session.scalar(lock) is not None


def refresh_worklist_row(session: Session, study_id: int) -> None:
    """Recompute one study's worklist row from its latest check's flags and their reviews.

    Called inside the transaction that changed them (a check queued or completed, a flag reviewed),
    which took :func:`lock_study` before its first write; the lock is taken again here (a no-op
    then), so two concurrent reviews of one study cannot both count without the other's decision.
    """
    session.flush()
    if not lock_study(session, study_id):
        return
    latest = session.scalar(select(func.max(CheckJob.id)).where(CheckJob.study_id == study_id))
    is_open = ~exists().where(Review.flag_id == Flag.id)
    counts: dict[str, int] = {k: 0 for k in SEVERITY_RANK}
    total = 0
    if latest is not None:
        for severity, n_all, n_open in session.execute(
            select(Flag.severity, func.count(Flag.id), func.sum(case((is_open, 1), else_=0)))
            .where(Flag.check_job_id == latest)
            .group_by(Flag.severity)
        ):
            total += int(n_all)
            if severity in counts:
                counts[severity] += int(n_open or 0)
    row = session.get(WorklistRow, study_id)
    if row is None:
        row = WorklistRow(study_id=study_id)
        session.add(row)
    row.latest_job_id = latest
    row.flags = total
    row.open_flags = sum(counts.values())
    row.open_critical = counts["critical"]
    row.open_warning = counts["warning"]
    row.open_info = counts["info"]
    row.top_rank = max((SEVERITY_RANK[k] for k, n in counts.items() if n), default=0)


def rebuild_worklist(session: Session) -> int:
    """Recompute every study's worklist row in two statements (after a bulk load); returns rows."""
    latest = (
        select(CheckJob.study_id.label("study_id"), func.max(CheckJob.id).label("job_id"))
        .group_by(CheckJob.study_id)
        .subquery("latest")
    )
    is_open = ~exists().where(Review.flag_id == Flag.id)
    agg = (
        select(
            Flag.check_job_id.label("job_id"),
            func.count(Flag.id).label("flags"),
            *(
                func.sum(case((and_(Flag.severity == k, is_open), 1), else_=0)).label(k)
                for k in SEVERITY_RANK
            ),
        )
        .group_by(Flag.check_job_id)
        .subquery("agg")
    )
    n_open = {k: func.coalesce(agg.c[k], 0) for k in SEVERITY_RANK}
    top = case(*((n_open[k] > 0, SEVERITY_RANK[k]) for k in SEVERITY_RANK), else_=0)
    rows = (
        select(
            Study.id,
            latest.c.job_id,
            func.coalesce(agg.c.flags, 0),
            n_open["critical"] + n_open["warning"] + n_open["info"],
            n_open["critical"],
            n_open["warning"],
            n_open["info"],
            top,
            literal(utcnow(), UTCDateTime()),
        )
        .select_from(Study)
        .outerjoin(latest, latest.c.study_id == Study.id)
        .outerjoin(agg, agg.c.job_id == latest.c.job_id)
    )
    session.execute(delete(WorklistRow))
    session.execute(
        insert(WorklistRow).from_select(
            [
                "study_id",
                "latest_job_id",
                "flags",
                "open_flags",
                "open_critical",
                "open_warning",
                "open_info",
                "top_rank",
                "updated_at",
            ],
            rows,
        )
    )
    return int(session.scalar(select(func.count()).select_from(WorklistRow)) or 0)


def _filtered(columns: list[Any], flt: WorklistFilter) -> Select[Any]:
    query = (
        select(*columns).select_from(Study).outerjoin(WorklistRow, WorklistRow.study_id == Study.id)
    )
    open_flags = func.coalesce(WorklistRow.open_flags, 0)
    if flt.status:
        query = query.where(Study.status == flt.status)
    if flt.accession_number:
        query = query.where(Study.accession_number == flt.accession_number)
    if flt.date_from:
        query = query.where(Study.study_date >= flt.date_from.strftime("%Y%m%d"))
    if flt.date_to:
        query = query.where(Study.study_date <= flt.date_to.strftime("%Y%m%d"))
    if flt.review == "unreviewed":
        query = query.where(open_flags > 0)
    elif flt.review == "reviewed":
        query = query.where(WorklistRow.flags > 0, open_flags == 0)
    if flt.severity:
        query = query.where(_OPEN_COLUMN[flt.severity] > 0)
    if flt.subtype:
        query = query.where(
            exists().where(
                Flag.check_job_id == WorklistRow.latest_job_id, Flag.subtype == flt.subtype
            )
        )
    return query


def _ordered(query: Select[Any]) -> Select[Any]:
    return query.order_by(
        func.coalesce(WorklistRow.top_rank, 0).desc(),
        Study.created_at.asc(),
        Study.id.asc(),
    )


def worklist(session: Session, flt: WorklistFilter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of the worklist and the counts over the whole filtered list."""
    rows = session.execute(
        _ordered(
            _filtered(
                [
                    Study,
                    WorklistRow.latest_job_id,
                    func.coalesce(WorklistRow.flags, 0),
                    func.coalesce(WorklistRow.open_flags, 0),
                    func.coalesce(WorklistRow.top_rank, 0),
                ],
                flt,
            )
        )
        .limit(flt.limit)
        .offset(flt.offset)
    ).all()
    ids = [r[1] for r in rows if r[1] is not None]
    jobs: dict[int, tuple[str | None, int | None]] = {}
    subtypes: dict[int, set[str]] = {}
    if ids:
        for row in session.execute(
            select(CheckJob.id, CheckJob.status, Report.version)
            .join(Report, Report.id == CheckJob.report_id)
            .where(CheckJob.id.in_(ids))
        ):
            jobs[row[0]] = (row[1], row[2])
        for job_id, subtype in session.execute(
            select(Flag.check_job_id, Flag.subtype).where(Flag.check_job_id.in_(ids)).distinct()
        ):
            subtypes.setdefault(job_id, set()).add(subtype)
    items = []
    for study, job_id, n_flags, n_open, top_rank in rows:
        status, version = jobs.get(job_id, (None, None)) if job_id is not None else (None, None)
        items.append(
            {
                "study_instance_uid": study.study_instance_uid,
                "accession_number": study.accession_number,
                "study_date": study.study_date,
                "study_description": study.study_description,
                "status": study.status,
                "created_at": study.created_at,
                "latest_check_id": job_id,
                "latest_check_status": status,
                "report_version": version,
                "flags": int(n_flags),
                "open_flags": int(n_open),
                "top_severity": _RANK_NAME.get(int(top_rank)) if n_open else None,
                "subtypes": sorted(subtypes.get(job_id, set())),
            }
        )
    open_flags = func.coalesce(WorklistRow.open_flags, 0)
    total, with_open, n_open, *by_sev = session.execute(
        _filtered(
            [
                func.count(Study.id),
                func.sum(case((open_flags > 0, 1), else_=0)),
                func.sum(open_flags),
                *(func.sum(func.coalesce(col, 0)) for col in _OPEN_COLUMN.values()),
            ],
            flt,
        )
    ).one()
    counts = {
        "studies": int(total or 0),
        "with_open_flags": int(with_open or 0),
        "open_flags": int(n_open or 0),
        "by_severity": {k: int(v or 0) for k, v in zip(_OPEN_COLUMN, by_sev, strict=True)},
    }
    return items, counts


def next_unreviewed(session: Session, flt: WorklistFilter, *, after: str | None) -> str | None:
    """The first study of the (filtered) worklist with open flags, other than ``after``."""
    query = _filtered([Study.study_instance_uid], flt).where(
        func.coalesce(WorklistRow.open_flags, 0) > 0
    )
    if after:
        query = query.where(Study.study_instance_uid != after)
    found: str | None = session.scalar(_ordered(query).limit(1))
    return found
