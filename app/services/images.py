"""Stored images rendered for display: dicom_io's pixel pipeline, a reader's window/level, PNG/JPEG.

Rendering a 12-bit chest radiograph takes a few hundred milliseconds; the encoded result is cached
(in memory, least recently used) by the instance's content hash and the display parameters.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

import dicom_io
from app.db.models import Instance
from app.services.errors import InvalidInputError, NotFoundError
from app.services.storage import ContentStore

__all__ = ["PRESETS", "DisplayRequest", "RenderCache", "RenderedDisplay", "render_instance"]

# Chest radiographs carry no calibrated units (unlike CT's Hounsfield), so presets are windows from
# the image's own value distribution, besides the file's own window (what the checker used).
PRESETS: dict[str, tuple[float, float] | None] = {
    "default": None,  # the file's VOI LUT or window (else a robust percentile window)
    "auto": (0.5, 99.5),
    "high_contrast": (5.0, 95.0),
    "full_range": (0.0, 100.0),
}
MAX_SIZE = 4096


@dataclass(frozen=True)
class DisplayRequest:
    preset: str = "default"
    center: float | None = None
    width: float | None = None
    invert: bool = False
    max_size: int = 1024
    format: Literal["png", "jpeg"] = "png"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise InvalidInputError(
                f"Unknown window preset {self.preset!r}: use one of {', '.join(PRESETS)}."
            )
        if (self.center is None) != (self.width is None):
            raise InvalidInputError("Give both window 'center' and 'width', or neither.")
        if self.width is not None and self.width < 1:
            raise InvalidInputError(f"Window width {self.width} is below 1: use a width >= 1.")
        if not 16 <= self.max_size <= MAX_SIZE:
            raise InvalidInputError(f"size {self.max_size} is out of range: use 16 to {MAX_SIZE}.")


@dataclass(frozen=True)
class RenderedDisplay:
    content: bytes
    media_type: str
    width: int
    height: int
    original_width: int
    original_height: int
    window_center: float | None
    window_width: float | None
    window_source: str
    sha256: str


def _voi(req: DisplayRequest) -> dicom_io.Window | dicom_io.PercentileWindow | None:
    if req.center is not None and req.width is not None:
        return dicom_io.Window(req.center, req.width, source="reader")
    percentiles = PRESETS[req.preset]
    if percentiles is None:
        return None
    return dicom_io.PercentileWindow(*percentiles)


def _window_values(
    steps: tuple[dict[str, dicom_io.JSONValue], ...],
) -> tuple[float | None, float | None, str]:
    for step in steps:
        if step.get("transform") == "Window":
            return _num(step.get("center")), _num(step.get("width")), str(step.get("source"))
        if step.get("transform") == "PercentileWindow":
            lo, hi = _num(step.get("low")), _num(step.get("high"))
            if lo is not None and hi is not None:
                return (lo + hi) / 2, hi - lo, "percentile"
        if step.get("transform") == "VOILUTFromFile":
            return None, None, "voi_lut"
    return None, None, "unknown"


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class RenderCache:
    """A small thread-safe LRU of encoded display images."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[tuple[object, ...], RenderedDisplay] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> RenderedDisplay | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: tuple[object, ...], value: RenderedDisplay) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)


def render_instance(
    session: Session,
    store: ContentStore,
    cache: RenderCache,
    *,
    sop_instance_uid: str,
    req: DisplayRequest,
) -> tuple[RenderedDisplay, int, bool]:
    """The display image of a stored instance, its study id, and whether it came from the cache."""
    row = session.execute(
        select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"No stored instance with SOPInstanceUID {sop_instance_uid!r}.")
    study_id = row.series.study_id
    key = (row.sha256, req)
    hit = cache.get(key)
    if hit is not None:
        return hit, study_id, True
    rendered = dicom_io.render(store.path_for(row.storage_path), _voi(req))
    display = rendered.display
    if req.invert:
        display = 255 - display
    image = Image.fromarray(display, mode="L")
    original = image.size
    if max(original) > req.max_size:
        image.thumbnail((req.max_size, req.max_size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if req.format == "jpeg":
        image.save(buf, format="JPEG", quality=90)
    else:
        image.save(buf, format="PNG", compress_level=1)
    center, width, source = _window_values(rendered.steps)
    out = RenderedDisplay(
        content=buf.getvalue(),
        media_type=f"image/{req.format}",
        width=image.size[0],
        height=image.size[1],
        original_width=original[0],
        original_height=original[1],
        window_center=center,
        window_width=width,
        window_source=source,
        sha256=row.sha256,
    )
    cache.put(key, out)
    return out, study_id, False
