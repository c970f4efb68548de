"""Training-free grounding: where in the film a model's answer comes from, as maps and boxes.

``relevance`` (gradient x input on the visual tokens, or MONAI occlusion sensitivity on the film),
``maps`` (token relevance laid back on the original film through the slicing geometry; heat-map
PNG), ``boxes`` (threshold, largest connected regions, bounding boxes in original film pixels, the
patient side of a box, box IoU). ``llava`` computes relevance with the local LLaVA-Rad runtime.
"""

from __future__ import annotations

from medvlm.grounding.boxes import (
    DEFAULT_MAX_REGIONS,
    DEFAULT_THRESHOLD,
    FilmBox,
    SideReading,
    box_iou,
    box_side,
    map_statistics,
    map_to_boxes,
)
from medvlm.grounding.maps import (
    DEFAULT_MAP_SIDE,
    FilmMap,
    GroundingError,
    PartSpan,
    TokenLayout,
    heatmap_png,
    lay_back,
)
from medvlm.grounding.relevance import (
    Relevance,
    RelevanceMethod,
    gradient_x_input,
    occlusion_film_map,
)

__all__ = [
    "DEFAULT_MAP_SIDE",
    "DEFAULT_MAX_REGIONS",
    "DEFAULT_THRESHOLD",
    "FilmBox",
    "FilmMap",
    "GroundingError",
    "PartSpan",
    "Relevance",
    "RelevanceMethod",
    "SideReading",
    "TokenLayout",
    "box_iou",
    "box_side",
    "gradient_x_input",
    "heatmap_png",
    "lay_back",
    "map_statistics",
    "map_to_boxes",
    "occlusion_film_map",
]
