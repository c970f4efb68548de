"""Grounding results of a check: stored rows (boxes, outcome, heat-map PNG) and their links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, undefer

from app.db.models import CheckJob, GroundingRecord
from app.services.errors import NotFoundError
from medvlm.checking import Grounding
from medvlm.grounding import heatmap_png

__all__ = ["get_grounding", "heatmap_url", "link_boxes", "store_groundings"]


def heatmap_url(job_id: int, grounding_id: int) -> str:
    return f"/api/v1/checks/{job_id}/groundings/{grounding_id}/heatmap.png"


def store_groundings(
    session: Session, job: CheckJob, groundings: Sequence[Grounding]
) -> dict[int, int]:
    """Replace the job's grounding rows; returns grounding index -> row id."""
    session.execute(delete(GroundingRecord).where(GroundingRecord.check_job_id == job.id))
    rows: dict[int, GroundingRecord] = {}
    for g in groundings:
        data = g.to_dict()
        row = GroundingRecord(
            check_job_id=job.id,
            study_id=job.study_id,
            position=g.index,
            target=g.target[:64],
            label=g.label[:128],
            source=g.source,
            method=g.method[:32],
            status=g.status,
            error=g.error,
            question=g.question,
            boxes=data["boxes"],
            statistics={**data["statistics"], "timings_ms": data["timings_ms"]},
            side=data["side"],
            film_width=None if g.film_size is None else g.film_size[0],
            film_height=None if g.film_size is None else g.film_size[1],
            map_png=None if g.film_map is None else heatmap_png(g.film_map.values),
        )
        session.add(row)
        rows[g.index] = row
    session.flush()
    return {index: row.id for index, row in rows.items()}


def link_boxes(evidence: dict[str, Any], job_id: int, ids: dict[int, int]) -> dict[str, Any]:
    """Flag evidence whose boxes name a grounding index gets the stored row's id and heat map."""

    def link(item: dict[str, Any]) -> dict[str, Any]:
        index = item.get("grounding_index")
        row_id = ids.get(index) if isinstance(index, int) else None
        if row_id is None:
            return item
        return {**item, "grounding_id": row_id, "heatmap_url": heatmap_url(job_id, row_id)}

    boxes = evidence.get("boxes")
    if isinstance(boxes, list):
        evidence["boxes"] = [link(b) if isinstance(b, dict) else b for b in boxes]
    grounding = evidence.get("grounding")
    if isinstance(grounding, dict):
        evidence["grounding"] = link(grounding)
    return evidence


def get_grounding(
    session: Session, job_id: int, grounding_id: int, *, with_map: bool = False
) -> GroundingRecord:
    query = select(GroundingRecord).where(
        GroundingRecord.id == grounding_id, GroundingRecord.check_job_id == job_id
    )
    if with_map:
        query = query.options(undefer(GroundingRecord.map_png))
    row = session.scalar(query)
    if row is None:
        raise NotFoundError(
            f"No grounding {grounding_id} in check job {job_id}; list them with "
            f"GET /api/v1/checks/{job_id}/groundings."
        )
    return row
