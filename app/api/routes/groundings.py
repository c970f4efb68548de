"""Grounding of a check: boxes per finding and the relevance map as a heat-map PNG."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import ReadAuditDep, Requester, SessionDep
from app.api.errors import ErrorBody
from app.api.routes.studies import grounding_out
from app.api.schemas import GroundingOut, IdPath
from app.services.errors import NotFoundError
from app.services.groundings import get_grounding
from app.services.queries import read_check

router = APIRouter(prefix="/checks/{job_id}/groundings", tags=["checks"])


@router.get(
    "",
    response_model=list[GroundingOut],
    summary="Every grounding attempt of a check: boxes (original film pixels), method, outcome",
    responses={404: {"model": ErrorBody}},
)
def get_groundings(job_id: IdPath, session: SessionDep, principal: Requester) -> list[GroundingOut]:
    return [grounding_out(row) for row in read_check(session, job_id)["groundings"]]


@router.get(
    "/{grounding_id}/heatmap.png",
    response_class=Response,
    summary="The relevance map of one grounding as an RGBA PNG overlay (film aspect; scale it to "
    "the displayed film)",
    responses={
        200: {"content": {"image/png": {}}, "description": "Heat map (unverified AI output)"},
        404: {"model": ErrorBody},
    },
)
def get_heatmap(
    job_id: IdPath,
    grounding_id: IdPath,
    session: SessionDep,
    principal: Requester,
    reads: ReadAuditDep,
) -> Response:
    row = get_grounding(session, job_id, grounding_id, with_map=True)
    if row.map_png is None:
        raise NotFoundError(
            f"Grounding {grounding_id} of check job {job_id} has no relevance map "
            f"(status {row.status}, source {row.source}): only relevance groundings that ran have one."
        )
    reads.add(
        actor=principal.actor,
        action="grounding.read",
        study_id=row.study_id,
        object_type="grounding",
        object_id=row.id,
    )
    return Response(
        content=row.map_png,
        media_type="image/png",
        headers={"X-RadCheck-AI-Output": "unverified", "Cache-Control": "private, max-age=300"},
    )
