"""A stored image rendered for display (PNG or JPEG): window/level, presets, invert, size limit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import ReadAuditDep, Reader, SessionDep, StoreDep
from app.api.errors import ErrorBody
from app.api.schemas import UidPath
from app.services.audit import ReadAuditBuffer
from app.services.images import (
    MAX_SIZE,
    PRESETS,
    DisplayRequest,
    RenderCache,
    RenderedDisplay,
    render_instance,
)
from app.services.storage import ContentStore

router = APIRouter(prefix="/instances", tags=["images"])

RENDERED_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/png": {}, "image/jpeg": {}}},
    404: {"model": ErrorBody},
}
"""What every rendered route answers (each adds its refusal of bad display parameters)."""


@dataclass(frozen=True)
class Display:
    """The display pipeline for one reader: every image it renders is an audited read.

    Both rendered routes (this one and DICOMweb's WADO-RS ``/rendered``) render through it.
    """

    session: Session
    store: ContentStore
    cache: RenderCache
    reads: ReadAuditBuffer
    actor: str

    def render(self, sop_uid: str, req: DisplayRequest) -> tuple[RenderedDisplay, bool]:
        """The instance's display image and whether it came from the render cache."""
        out, study_id, cached = render_instance(
            self.session, self.store, self.cache, sop_instance_uid=sop_uid, req=req
        )
        self.reads.add(
            actor=self.actor,
            action="image.read",
            study_id=study_id,
            object_type="instance",
            object_id=sop_uid[:64],
        )
        return out, cached


def get_display(
    request: Request, session: SessionDep, store: StoreDep, reads: ReadAuditDep, principal: Reader
) -> Display:
    return Display(session, store, request.app.state.render_cache, reads, principal.actor)


DisplayDep = Annotated[Display, Depends(get_display)]


@router.get(
    "/{sop_uid}/rendered",
    summary="The instance's image for display, through the checker's pixel pipeline",
    description="MONOCHROME1 is inverted so bright always means dense. Window presets: "
    + ", ".join(PRESETS)
    + "; or an explicit center and width in modality values. Headers X-Window-Center, "
    "X-Window-Width, X-Original-Width/Height and X-Image-Width/Height describe the result (boxes are "
    "in original pixels: scale by X-Image-Width / X-Original-Width).",
    response_class=Response,
    responses={**RENDERED_RESPONSES, 422: {"model": ErrorBody}},
)
def get_rendered(
    sop_uid: UidPath,
    display: DisplayDep,
    preset: Annotated[str, Query(pattern=r"^[a-z_]{1,32}$")] = "default",
    center: Annotated[float | None, Query(ge=-1e7, le=1e7)] = None,
    width: Annotated[float | None, Query(ge=1, le=1e7)] = None,
    invert: bool = False,
    size: Annotated[int, Query(ge=16, le=MAX_SIZE, description="Longest side, pixels")] = 1024,
    format: Annotated[Literal["png", "jpeg"], Query()] = "png",
) -> Response:
    req = DisplayRequest(
        preset=preset, center=center, width=width, invert=invert, max_size=size, format=format
    )
    out, cached = display.render(sop_uid, req)
    headers = {
        "Cache-Control": "private, max-age=300",
        "ETag": f'"{out.sha256[:16]}-{hashlib.sha256(repr(req).encode()).hexdigest()[:10]}"',
        "X-Image-Width": str(out.width),
        "X-Image-Height": str(out.height),
        "X-Original-Width": str(out.original_width),
        "X-Original-Height": str(out.original_height),
        "X-Window-Center": "" if out.window_center is None else f"{out.window_center:.1f}",
        "X-Window-Width": "" if out.window_width is None else f"{out.window_width:.1f}",
        "X-Window-Source": out.window_source,
        "X-Render-Cache": "hit" if cached else "miss",
    }
    return Response(out.content, media_type=out.media_type, headers=headers)
