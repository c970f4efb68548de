"""Read-side use cases: study lists and study details (each read is audited)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, selectinload

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
    total = session.scalar(_apply(select(func.count(Study.id)), flt)) or 0
    studies = session.scalars(
        _apply(select(Study), flt)
        .order_by(Study.created_at.desc(), Study.id.desc())
        .limit(flt.limit)
        .offset(flt.offset)
    ).all()
    ids = [s.id for s in studies]
    if not ids:
        return [], total
    images = dict(
        session.execute(
            select(Series.study_id, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id)
            .where(Series.study_id.in_(ids))
            .group_by(Series.study_id)
        ).all()
    )
    reports = dict(
        session.execute(
            select(Report.study_id, func.count(Report.id))
            .where(Report.study_id.in_(ids))
            .group_by(Report.study_id)
        ).all()
    )
    latest = {
        job.study_id: job
        for job in session.scalars(
            select(CheckJob).where(CheckJob.id.in_(_latest_job_ids()), CheckJob.study_id.in_(ids))
        )
    }
    reviewed = select(Review.flag_id)
    open_flags = dict(
        session.execute(
            select(Flag.study_id, func.count(Flag.id))
            .where(
                Flag.check_job_id.in_([j.id for j in latest.values()]),
                Flag.id.not_in(reviewed),
            )
            .group_by(Flag.study_id)
        ).all()
    )
    items = [
        {
            "study_instance_uid": s.study_instance_uid,
            "accession_number": s.accession_number,
            "study_date": s.study_date,
            "study_description": s.study_description,
            "status": s.status,
            "images": images.get(s.id, 0),
            "report_versions": reports.get(s.id, 0),
            "latest_check_status": latest[s.id].status if s.id in latest else None,
            "open_flags": open_flags.get(s.id, 0),
            "created_at": s.created_at,
            "last_instance_at": s.last_instance_at,
        }
        for s in studies
    ]
    return items, total


def get_study(session: Session, study_uid: str) -> Study:
    """The study with its images, report versions, checks and flags (loaded eagerly).

    The caller audits the read (``ReadAuditBuffer``).
    """
    study = session.scalar(
        select(Study)
        .where(Study.study_instance_uid == study_uid)
        .options(
            selectinload(Study.series).selectinload(Series.instances),
            selectinload(Study.reports),
            selectinload(Study.jobs).selectinload(CheckJob.flags).selectinload(Flag.reviews),
        )
    )
    if study is None:
        raise NotFoundError(f"No study with StudyInstanceUID {study_uid!r}.")
    return study
