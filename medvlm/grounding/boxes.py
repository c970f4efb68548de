"""A film relevance map -> boxes in original film pixels, map statistics, and the box's side.

Threshold at a fraction of the map's peak, keep the largest connected regions (MONAI's
``get_largest_connected_component_mask``), one bounding rectangle per region (MONAI's
``generate_spatial_bounding_box``), scaled back to film pixels. Box overlap for evaluation is
MONAI's ``box_iou``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from medvlm.grounding.maps import FilmMap, GroundingError

__all__ = [
    "DEFAULT_MAX_REGIONS",
    "DEFAULT_THRESHOLD",
    "FilmBox",
    "SideReading",
    "box_iou",
    "box_side",
    "map_statistics",
    "map_to_boxes",
]

DEFAULT_THRESHOLD = 0.5
"""Map pixels at or above this fraction of the peak relevance form the regions."""
DEFAULT_MAX_REGIONS = 2
"""Connected regions kept (largest first); a second one only with a quarter of the first's mass."""
_SECOND_REGION_MASS = 0.25


@dataclass(frozen=True)
class FilmBox:
    """A box on the original film: ``[x0, y0, x1, y1]`` pixels (x right, y down, end exclusive)."""

    box: tuple[float, float, float, float]
    label: str
    mass_fraction: float
    """Share of the map's positive relevance inside the box."""
    area_fraction: float
    """Share of the film's area inside the box."""

    def rounded(self) -> list[float]:
        return [round(v, 1) for v in self.box]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.rounded(),
            "label": self.label,
            "space": "original_pixels",
            "mass_fraction": round(self.mass_fraction, 4),
            "area_fraction": round(self.area_fraction, 4),
        }


def map_statistics(film_map: FilmMap) -> dict[str, float]:
    """Peak, mean, positive and negative mass, and the peak-to-mean ratio of a map."""
    v = film_map.values.astype(np.float64)
    pos = np.clip(v, 0.0, None)
    mean_pos = float(pos.mean()) if pos.size else 0.0
    return {
        "peak": float(v.max()) if v.size else 0.0,
        "mean": float(v.mean()) if v.size else 0.0,
        "positive_mass": float(pos.sum()),
        "negative_mass": float(np.clip(v, None, 0.0).sum()),
        "peak_to_mean": float(pos.max() / mean_pos) if mean_pos > 0 else 0.0,
    }


def map_to_boxes(
    film_map: FilmMap,
    *,
    label: str,
    threshold: float = DEFAULT_THRESHOLD,
    max_regions: int = DEFAULT_MAX_REGIONS,
) -> tuple[list[FilmBox], dict[str, Any]]:
    """Boxes (largest region first) and the statistics that explain them.

    No positive relevance gives no box, and the statistics say so (``"reason"``).
    """
    if not 0.0 < threshold < 1.0:
        raise GroundingError(f"threshold {threshold} must be in (0, 1): a fraction of the peak")
    if max_regions < 1:
        raise GroundingError(f"max_regions {max_regions} must be >= 1")
    stats: dict[str, Any] = {**map_statistics(film_map), "threshold": threshold}
    values = np.nan_to_num(film_map.values.astype(np.float64))
    pos = np.clip(values, 0.0, None)
    peak = float(pos.max()) if pos.size else 0.0
    total = float(pos.sum())
    if peak <= 0.0 or total <= 0.0:
        stats.update(regions=0, reason="no positive relevance: the answer does not rise anywhere")
        return [], stats
    from monai.transforms.utils import (  # imported on use: MONAI is heavy to import
        generate_spatial_bounding_box,
        get_largest_connected_component_mask,
    )

    mask = torch.from_numpy(pos >= threshold * peak)
    kept = get_largest_connected_component_mask(mask, connectivity=2, num_components=max_regions)
    kept_np = np.asarray(kept, dtype=bool)
    from skimage.measure import label as label_regions  # MONAI's own CPU backend

    labels = np.asarray(label_regions(kept_np, connectivity=2), dtype=np.int64)  # type: ignore[no-untyped-call]
    regions: list[tuple[float, list[int], list[int]]] = []
    for index in range(1, int(labels.max()) + 1):
        region = labels == index
        start, end = generate_spatial_bounding_box(region[None])
        regions.append((float(pos[region].sum()), list(start), list(end)))
    regions.sort(key=lambda r: -r[0])
    width, height = film_map.film_size
    boxes: list[FilmBox] = []
    for mass, start, end in regions:
        if boxes and mass < _SECOND_REGION_MASS * regions[0][0]:
            break
        (r0, c0), (r1, c1) = start, end
        film_box = film_map.to_film_box((c0, r0, c1, r1))
        inside = float(pos[r0:r1, c0:c1].sum())
        area = (film_box[2] - film_box[0]) * (film_box[3] - film_box[1])
        boxes.append(
            FilmBox(
                box=film_box,
                label=label,
                mass_fraction=inside / total,
                area_fraction=area / float(width * height),
            )
        )
    stats["regions"] = len(boxes)
    stats["mass_in_boxes"] = _mass_in_union(pos, film_map, boxes) / total
    return boxes, stats


def _mass_in_union(pos: NDArray[np.float64], film_map: FilmMap, boxes: Sequence[FilmBox]) -> float:
    sx, sy = film_map.scale
    union = np.zeros(pos.shape, dtype=bool)
    for b in boxes:
        x0, y0, x1, y1 = b.box
        union[round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)] = True
    return float(pos[union].sum())


def box_iou(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> NDArray[np.float64]:
    """Pairwise IoU of ``[x0, y0, x1, y1]`` boxes (MONAI's ``box_iou``): ``[len(a), len(b)]``."""
    from monai.data.box_utils import box_iou as _monai_box_iou

    out = _monai_box_iou(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class SideReading:
    """Which side of the patient a box lies on, and what that reading rests on."""

    side: str | None
    """``"right"``, ``"left"`` or ``None`` (across the midline, or the orientation forbids it)."""
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return {"side": self.side, "basis": self.basis}


_LATERAL_VIEWS = frozenset({"LL", "RL", "LLD", "RLD", "LAT", "LATERAL"})
_DEAD_BAND = (0.45, 0.55)


def box_side(
    box: Sequence[float],
    film_width: int,
    *,
    patient_orientation: Sequence[str] | None = None,
    view_position: str | None = None,
) -> SideReading:
    """The patient's side a box lies on, from where it sits across the film's vertical midline.

    DICOM PatientOrientation (0020,0020) gives the patient direction of the rows (towards
    increasing column) first: ``L`` (the usual display of a frontal chest film, PA or AP: the
    patient's right on the viewer's left), ``R`` (a film flipped left-right). Without it the usual
    display is assumed and the basis says so. Lateral views, or a row direction along A/P/H/F, have
    no left/right across the film: no side is read. A box whose centre lies within 5 % of the
    midline has no side either.
    """
    if film_width <= 0:
        raise GroundingError(f"film width {film_width} must be positive")
    view = (view_position or "").strip().upper()
    if view in _LATERAL_VIEWS:
        return SideReading(None, f"view {view} is lateral: no left/right across the film")
    row = ""
    if patient_orientation:
        row = str(patient_orientation[0]).strip().upper()
    if row and row[0] not in "LR":
        return SideReading(
            None, f"PatientOrientation rows point {row!r}: no left/right across the film"
        )
    if row.startswith("R"):
        right_on_low_x, basis = (
            False,
            "PatientOrientation rows R (patient's right on the viewer's right)",
        )
    elif row.startswith("L"):
        right_on_low_x, basis = (
            True,
            "PatientOrientation rows L (patient's right on the viewer's left)",
        )
    else:
        right_on_low_x = True
        basis = "PatientOrientation absent: usual frontal display assumed (patient's right on the viewer's left)"
    centre = (float(box[0]) + float(box[2])) / 2.0 / film_width
    if _DEAD_BAND[0] <= centre <= _DEAD_BAND[1]:
        return SideReading(None, f"box centre at {centre:.2f} of the width: across the midline")
    low = centre < _DEAD_BAND[0]
    side = "right" if low == right_on_low_x else "left"
    return SideReading(side, basis)
