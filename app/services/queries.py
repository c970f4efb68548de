"""Read-side use cases: study lists, study details and check details (each read is audited).

Reads select columns, not ORM entities: a study read builds no identity map, runs no loader
strategies and decodes no column the answer does not show, which is most of a read's CPU on the
API's hot path (bench/api_load.py). Each function answers plain mappings in the relationships'
order (series by number, instances by number, report versions, checks and flags by id, reviews
by id, groundings by position); the API shapes them into its response models.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, func, inspect, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db.models import (
    Base,
    CheckJob,
    Flag,
    GroundingRecord,
    Instance,
    Report,
    Review,
    Series,
    Study,
)
from app.services.errors import NotFoundError

__all__ = ["Row", "StudyFilter", "list_studies", "read_check", "read_study"]

Row = dict[str, Any]


@dataclass(frozen=True)
class StudyFilter:
    status: str | None = None
    has_flags: bool | None = None
    date_from: date | None = None
    date_to: date | None = None
    accession_number: str | None = None
    limit: int = 50
    offset: int = 0


def _latest_job_ids() -> Any:
    return select(func.max(CheckJob.id)).group_by(CheckJob.study_id)


def _apply(query: Select[Any], flt: StudyFilter) -> Select[Any]:
    if flt.status:
        query = query.where(Study.status == flt.status)
    if flt.accession_number:
        query = query.where(Study.accession_number == flt.accession_number)
    if flt.date_from:
        query = query.where(Study.study_date >= flt.date_from.strftime("%Y%m%d"))
    if flt.date_to:
        query = query.where(Study.study_date <= flt.date_to.strftime("%Y%m%d"))
    if flt.has_flags is not None:
        flagged = exists().where(
            Flag.study_id == Study.id, Flag.check_job_id.in_(_latest_job_ids())
        )
        query = query.where(flagged if flt.has_flags else ~flagged)
    return query


def list_studies(session: Session, flt: StudyFilter) -> tuple[list[dict[str, Any]], int]:
    """One query for the page (counts and the latest check as correlated subqueries, the total as
    a window); a second only for a page past the end, to report the total."""
    latest_job_id = (
        select(func.max(CheckJob.id))
        .where(CheckJob.study_id == Study.id)
        .correlate(Study)
        .scalar_subquery()
    )
    images = (
        select(func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Study.id)
        .scalar_subquery()
    )
    reports = select(func.count(Report.id)).where(Report.study_id == Study.id).scalar_subquery()
    latest_status = select(CheckJob.status).where(CheckJob.id == latest_job_id).scalar_subquery()
    open_flags = (
        select(func.count(Flag.id))
        .where(Flag.check_job_id == latest_job_id, ~exists().where(Review.flag_id == Flag.id))
        .scalar_subquery()
    )
    rows = session.execute(
        _apply(
            select(
                *_columns(Study, "patient_id", "patient_name", "updated_at"),
                images.label("images"),
                reports.label("report_versions"),
                latest_status.label("latest_check_status"),
                open_flags.label("open_flags"),
                func.count().over().label("total"),
            ),
            flt,
        )
        .order_by(Study.created_at.desc(), Study.id.desc())
        .limit(flt.limit)
        .offset(flt.offset)
    ).all()
    if not rows:
        total = session.scalar(_apply(select(func.count(Study.id)), flt)) or 0
        return [], total
    items = [
        {
            **row,
            "images": row["images"] or 0,
            "report_versions": row["report_versions"] or 0,
            "open_flags": row["open_flags"] or 0,
        }
        for row in (r._mapping for r in rows)
    ]
    return items, int(rows[0].total)


def _columns(model: type[Base], *without: str) -> list[InstrumentedAttribute[Any]]:
    """The model's mapped columns (by attribute name) bar ``without`` and deferred ones (blobs)."""
    return [
        getattr(model, attr.key)
        for attr in inspect(model).column_attrs
        if attr.key not in without and not attr.deferred
    ]


_REVIEW = [c.label(f"review_{c.key}") for c in _columns(Review, "flag_id")]


def read_study(session: Session, study_uid: str) -> Row:
    """The study with its images (``series_*`` beside each instance's columns), report versions
    and checks (each with its flags, their reviews, and its groundings): five statements whatever
    the study's size. The caller audits the read (``ReadAuditBuffer``)."""
    rows = session.execute(
        select(
            *_columns(Study, "patient_id", "patient_name", "updated_at"),
            Series.series_instance_uid,
            Series.series_number,
            Series.modality,
            *(
                c.label(f"instance_{c.key}")
                for c in _columns(Instance, "attributes", "storage_path")
            ),
        )
        .outerjoin(Series, Series.study_id == Study.id)
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(Study.study_instance_uid == study_uid)
        .order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)
    ).all()
    if not rows:
        raise NotFoundError(f"No study with StudyInstanceUID {study_uid!r}.")
    first = rows[0]._mapping
    study: Row = {
        c.key: first[c.key] for c in _columns(Study, "patient_id", "patient_name", "updated_at")
    }
    study["images"] = [
        {
            **{k.removeprefix("instance_"): v for k, v in m.items() if k.startswith("instance_")},
            "series_instance_uid": m["series_instance_uid"],
            "series_number": m["series_number"],
            "modality": m["modality"],
        }
        for m in (r._mapping for r in rows)
        if m["instance_id"] is not None
    ]
    study["reports"] = [
        dict(r._mapping)
        for r in session.execute(
            select(*_columns(Report)).where(Report.study_id == study["id"]).order_by(Report.version)
        )
    ]
    study["checks"] = _checks(
        session,
        CheckJob.study_id == study["id"],
        Flag.study_id == study["id"],
        GroundingRecord.study_id == study["id"],
    )
    return study


def read_check(session: Session, job_id: int) -> Row:
    """One check with its flags (each with its reviews) and groundings: three statements."""
    found = _checks(
        session,
        CheckJob.id == job_id,
        Flag.check_job_id == job_id,
        GroundingRecord.check_job_id == job_id,
    )
    if not found:
        raise NotFoundError(f"No check job {job_id}.")
    return found[0]


def _checks(
    session: Session,
    jobs_where: ColumnElement[bool],
    flags_where: ColumnElement[bool],
    groundings_where: ColumnElement[bool],
) -> list[Row]:
    jobs = [
        {**r._mapping, "flags": [], "groundings": []}
        for r in session.execute(
            select(*_columns(CheckJob, "lease_owner", "lease_expires_at"))
            .where(jobs_where)
            .order_by(CheckJob.id)
        )
    ]
    if not jobs:
        return []
    by_id = {job["id"]: job for job in jobs}
    flags: dict[int, Row] = {}
    for r in session.execute(
        select(*_columns(Flag, "key"), *_REVIEW)
        .outerjoin(Review, Review.flag_id == Flag.id)
        .where(flags_where)
        .order_by(Flag.id, Review.id)
    ):
        m = r._mapping
        if m["check_job_id"] not in by_id:
            continue  # its check was queued and finished after the checks were read
        flag = flags.get(m["id"])
        if flag is None:
            flag = {k: v for k, v in m.items() if not k.startswith("review_")}
            flag["reviews"] = []
            flags[m["id"]] = flag
            by_id[m["check_job_id"]]["flags"].append(flag)
        if m["review_id"] is not None:
            flag["reviews"].append(
                {k.removeprefix("review_"): v for k, v in m.items() if k.startswith("review_")}
            )
    for r in session.execute(
        select(*_columns(GroundingRecord))
        .where(groundings_where)
        .order_by(GroundingRecord.check_job_id, GroundingRecord.position)
    ):
        if r.check_job_id in by_id:
            by_id[r.check_job_id]["groundings"].append(dict(r._mapping))
    return jobs
