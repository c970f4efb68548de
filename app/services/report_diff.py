"""What changed between two versions of a study's report, section by section."""

from __future__ import annotations

import difflib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Report, Study
from app.services.errors import InvalidInputError, NotFoundError

__all__ = ["SECTIONS", "diff_reports"]

SECTIONS = ("indication", "comparison", "technique", "findings", "impression")


def diff_reports(
    session: Session, *, study_uid: str, from_version: int | None, to_version: int | None
) -> tuple[int, int, list[dict[str, Any]], int]:
    """(from, to, per-section changes, study id); defaults: the latest version and the one before."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    if study is None:
        raise NotFoundError(f"No study with StudyInstanceUID {study_uid!r}.")
    reports = {
        r.version: r for r in session.scalars(select(Report).where(Report.study_id == study.id))
    }
    if not reports:
        raise NotFoundError(f"Study {study_uid!r} has no report yet.")
    to_v = to_version if to_version is not None else max(reports)
    from_v = from_version if from_version is not None else max(to_v - 1, min(reports))
    for v in (from_v, to_v):
        if v not in reports:
            raise NotFoundError(
                f"Study {study_uid!r} has no report version {v}: versions are {sorted(reports)}."
            )
    if from_v > to_v:
        raise InvalidInputError(f"from_version {from_v} is after to_version {to_v}: swap them.")
    a, b = reports[from_v], reports[to_v]
    sections = []
    for name in SECTIONS:
        before, after = getattr(a, name), getattr(b, name)
        diff = "\n".join(
            difflib.unified_diff(
                (before or "").splitlines(),
                (after or "").splitlines(),
                fromfile=f"v{from_v}",
                tofile=f"v{to_v}",
                lineterm="",
            )
        )
        sections.append(
            {
                "section": name,
                "before": before,
                "after": after,
                "changed": (before or "") != (after or ""),
                "unified_diff": diff,
            }
        )
    return from_v, to_v, sections, study.id
