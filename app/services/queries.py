"""Read-side use cases: study lists and study details (each read is audited)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from app.db.models import CheckJob, Flag, Instance, Report, Review, Series, Study
from app.services.errors import NotFoundError

__all__ = ["StudyFilter", "get_study", "list_studies"]


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
                Study,
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
            "study_instance_uid": s.study_instance_uid,
            "accession_number": s.accession_number,
            "study_date": s.study_date,
            "study_description": s.study_description,
            "status": s.status,
            "images": n_images or 0,
            "report_versions": n_reports or 0,
            "latest_check_status": status,
            "open_flags": n_open or 0,
            "created_at": s.created_at,
            "last_instance_at": s.last_instance_at,
        }
        for s, n_images, n_reports, status, n_open, _total in rows
    ]
    return items, int(rows[0].total)


def get_study(session: Session, study_uid: str) -> Study:
    """The study with its images, report versions, checks and flags (loaded eagerly).

    The caller audits the read (``ReadAuditBuffer``).
    """
    # Four queries whatever the study's size: study + series + instances (joined), report
    # versions, checks + flags + reviews (joined), groundings.
    study = (
        session.scalars(
            select(Study)
            .where(Study.study_instance_uid == study_uid)
            .options(
                joinedload(Study.series).joinedload(Series.instances),
                selectinload(Study.reports),
                selectinload(Study.jobs).joinedload(CheckJob.flags).joinedload(Flag.reviews),
                selectinload(Study.jobs).selectinload(CheckJob.groundings),
            )
        )
        .unique()
        .one_or_none()
    )
    if study is None:
        raise NotFoundError(f"No study with StudyInstanceUID {study_uid!r}.")
    return study
