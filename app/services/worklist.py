"""The radiologist's worklist: studies with open flags first, by the most severe open flag, then age.

"Open" means a flag of the study's latest check that nobody has decided on yet. Each read is audited
by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import Select, and_, case, exists, func, select
from sqlalchemy.orm import Session, aliased

from app.db.models import CheckJob, Flag, Report, Review, Study

__all__ = ["SEVERITY_RANK", "WorklistFilter", "next_unreviewed", "worklist"]

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


def _sources() -> tuple[Any, Any]:
    latest = (
        select(CheckJob.study_id.label("study_id"), func.max(CheckJob.id).label("job_id"))
        .group_by(CheckJob.study_id)
        .subquery("latest")
    )
    is_open = ~exists().where(Review.flag_id == Flag.id)
    rank = case(*((Flag.severity == k, v) for k, v in SEVERITY_RANK.items()), else_=0)
    agg = (
        select(
            Flag.check_job_id.label("job_id"),
            func.count(Flag.id).label("flags"),
            func.sum(case((is_open, 1), else_=0)).label("open"),
            func.max(case((is_open, rank), else_=0)).label("top_rank"),
        )
        .join(latest, latest.c.job_id == Flag.check_job_id)
        .group_by(Flag.check_job_id)
        .subquery("agg")
    )
    return latest, agg


def _filtered(columns: list[Any], flt: WorklistFilter, latest: Any, agg: Any) -> Select[Any]:
    query = (
        select(*columns)
        .select_from(Study)
        .outerjoin(latest, latest.c.study_id == Study.id)
        .outerjoin(agg, agg.c.job_id == latest.c.job_id)
    )
    if flt.status:
        query = query.where(Study.status == flt.status)
    if flt.accession_number:
        query = query.where(Study.accession_number == flt.accession_number)
    if flt.date_from:
        query = query.where(Study.study_date >= flt.date_from.strftime("%Y%m%d"))
    if flt.date_to:
        query = query.where(Study.study_date <= flt.date_to.strftime("%Y%m%d"))
    if flt.review == "unreviewed":
        query = query.where(func.coalesce(agg.c.open, 0) > 0)
    elif flt.review == "reviewed":
        query = query.where(agg.c.flags > 0, func.coalesce(agg.c.open, 0) == 0)
    if flt.severity or flt.subtype:
        f = aliased(Flag)  # not correlated with a Flag the outer query may join
        conds = [f.check_job_id == latest.c.job_id]
        if flt.severity:
            conds += [f.severity == flt.severity, ~exists().where(Review.flag_id == f.id)]
        if flt.subtype:
            conds.append(f.subtype == flt.subtype)
        query = query.where(exists().where(and_(*conds)).correlate(latest))
    return query


def _ordered(query: Select[Any], agg: Any) -> Select[Any]:
    has_open = case((func.coalesce(agg.c.open, 0) > 0, 1), else_=0)
    return query.order_by(
        has_open.desc(),
        func.coalesce(agg.c.top_rank, 0).desc(),
        Study.created_at.asc(),
        Study.id.asc(),
    )


def worklist(session: Session, flt: WorklistFilter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of the worklist and the counts over the whole filtered list."""
    latest, agg = _sources()
    rows = session.execute(
        _ordered(
            _filtered(
                [
                    Study,
                    latest.c.job_id,
                    func.coalesce(agg.c.flags, 0),
                    func.coalesce(agg.c.open, 0),
                    func.coalesce(agg.c.top_rank, 0),
                ],
                flt,
                latest,
                agg,
            ),
            agg,
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
    total, with_open, open_flags = session.execute(
        _filtered(
            [
                func.count(Study.id),
                func.sum(case((func.coalesce(agg.c.open, 0) > 0, 1), else_=0)),
                func.sum(func.coalesce(agg.c.open, 0)),
            ],
            flt,
            latest,
            agg,
        )
    ).one()
    by_severity = {k: 0 for k in SEVERITY_RANK}
    sev_query = (
        _filtered([Flag.severity, func.count(Flag.id)], flt, latest, agg)
        .join(Flag, Flag.check_job_id == latest.c.job_id)
        .where(~exists().where(Review.flag_id == Flag.id))
        .group_by(Flag.severity)
    )
    for severity, count in session.execute(sev_query):
        by_severity[severity] = int(count)
    counts = {
        "studies": int(total or 0),
        "with_open_flags": int(with_open or 0),
        "open_flags": int(open_flags or 0),
        "by_severity": by_severity,
    }
    return items, counts


def next_unreviewed(session: Session, flt: WorklistFilter, *, after: str | None) -> str | None:
    """The first study of the (filtered) worklist with open flags, other than ``after``."""
    latest, agg = _sources()
    query = _filtered([Study.study_instance_uid], flt, latest, agg).where(
        func.coalesce(agg.c.open, 0) > 0
    )
    if after:
        query = query.where(Study.study_instance_uid != after)
    found: str | None = session.scalar(_ordered(query, agg).limit(1))
    return found
