"""Relevance over visual tokens -> a relevance map on the original film, and the map as a PNG.

Each encoded part (a slice or the overview) covers a known window of the film
(:meth:`medvlm.processing.ProcessedImage.to_original_box`); its token grid subdivides that window
uniformly (the resize is affine per axis). A token's relevance is spread evenly over the film pixels
of its cell, so the map is a *density* (relevance per film pixel) and the relevance mass of every
part is kept: where the overview and a slice agree, their masses add. Pixels the model never saw
(the top and bottom cut by LLaVA-Rad's centre crop) stay zero, so no box can land there.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from medvlm.errors import MedVLMError
from medvlm.processing import PartRef, ProcessedImage

__all__ = [
    "DEFAULT_MAP_SIDE",
    "FilmMap",
    "GroundingError",
    "PartSpan",
    "TokenLayout",
    "heatmap_png",
    "lay_back",
    "resample_film_array",
]

DEFAULT_MAP_SIDE = 256
"""Long side of a film relevance map, in map pixels (the map keeps the film's aspect)."""


class GroundingError(MedVLMError):
    """A relevance map or a box could not be computed (bad layout, no image, model failure)."""


@dataclass(frozen=True)
class PartSpan:
    """Where one encoded part's tokens sit among the visual tokens, and their spatial grid.

    ``grid`` is the part's patch grid ``(rows, cols)`` before any budget reduction; the part kept
    either a full (possibly pooled) grid ``kept_grid`` or the patches ``kept_indices`` (row-major
    indices into ``grid``, ascending: the ``attention`` policy).
    """

    part: PartRef
    start: int
    n_tokens: int
    grid: tuple[int, int]
    kept_grid: tuple[int, int] | None = None
    kept_indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kept_grid is None and self.kept_indices is None:
            raise GroundingError(f"part {self.part!r}: give kept_grid or kept_indices")
        expected = (
            self.kept_grid[0] * self.kept_grid[1]
            if self.kept_grid is not None
            else len(self.kept_indices or ())
        )
        if expected != self.n_tokens:
            raise GroundingError(
                f"part {self.part!r} has {self.n_tokens} tokens but its kept grid/indices describe "
                f"{expected}: the layout does not match the visual tokens"
            )

    def cell_grid(self, relevance: NDArray[np.float32]) -> NDArray[np.float32]:
        """This part's token relevance (``[n_tokens]``) as a 2-D grid of cells."""
        if self.kept_grid is not None:
            return relevance.reshape(self.kept_grid)
        rows, cols = self.grid
        full = np.zeros(rows * cols, dtype=np.float32)
        full[np.asarray(self.kept_indices, dtype=np.int64)] = relevance
        return full.reshape(rows, cols)


@dataclass(frozen=True)
class TokenLayout:
    """The visual tokens of one prompt: the parts' spans (separators are not in any span)."""

    spans: tuple[PartSpan, ...]
    n_tokens: int

    def __post_init__(self) -> None:
        for span in self.spans:
            if span.start < 0 or span.start + span.n_tokens > self.n_tokens:
                raise GroundingError(
                    f"part {span.part!r} spans tokens {span.start}..{span.start + span.n_tokens} "
                    f"outside the {self.n_tokens} visual tokens"
                )

    def split(self, relevance: NDArray[np.float32]) -> list[tuple[PartSpan, NDArray[np.float32]]]:
        """Per part, its relevance cells (2-D)."""
        if relevance.shape != (self.n_tokens,):
            raise GroundingError(
                f"relevance has shape {relevance.shape}; expected ({self.n_tokens},), one value per "
                "visual token"
            )
        return [
            (span, span.cell_grid(relevance[span.start : span.start + span.n_tokens]))
            for span in self.spans
        ]


@dataclass(frozen=True)
class FilmMap:
    """A relevance density on the original film, sampled on a ``(map_h, map_w)`` grid.

    Map pixel ``(r, c)`` covers film pixels ``[c / sx, (c + 1) / sx) x [r / sy, (r + 1) / sy)``
    with ``(sx, sy) = scale``. ``values`` may be negative (evidence against the answer).
    """

    values: NDArray[np.float32]
    film_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """Map pixels per film pixel, ``(x, y)``."""
        h, w = self.values.shape
        return w / self.film_size[0], h / self.film_size[1]

    def to_film_box(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """A box in map pixels ``(x0, y0, x1, y1)`` (end exclusive) as film pixels, clipped."""
        sx, sy = self.scale
        width, height = self.film_size
        x0, y0, x1, y1 = (float(v) for v in box)
        return (
            min(max(x0 / sx, 0.0), float(width)),
            min(max(y0 / sy, 0.0), float(height)),
            min(max(x1 / sx, 0.0), float(width)),
            min(max(y1 / sy, 0.0), float(height)),
        )


def map_shape(film_size: tuple[int, int], max_side: int = DEFAULT_MAP_SIDE) -> tuple[int, int]:
    """``(map_h, map_w)`` for a ``(width, height)`` film: long side ``max_side`` at most."""
    width, height = film_size
    if width <= 0 or height <= 0:
        raise GroundingError(f"film size {film_size} must be positive")
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resample_film_array(values: NDArray[np.float32], shape: tuple[int, int]) -> NDArray[np.float32]:
    """Resample a 2-D array to ``shape`` (``area`` when shrinking, ``bilinear`` otherwise)."""
    if values.shape == shape:
        return values.astype(np.float32, copy=False)
    from monai.transforms.spatial.array import Resize  # imported on use: MONAI is heavy

    shrink = shape[0] <= values.shape[0] and shape[1] <= values.shape[1]
    resize = Resize(spatial_size=shape, mode="area" if shrink else "bilinear")
    out = resize(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None])
    return np.asarray(out[0], dtype=np.float32)


def lay_back(
    parts: Sequence[tuple[PartSpan, NDArray[np.float32]]],
    processed: ProcessedImage,
    *,
    max_side: int = DEFAULT_MAP_SIDE,
) -> FilmMap:
    """Spread each part's cell relevance over the film window the part covers; sum the parts."""
    film = processed.original_size
    mh, mw = map_shape(film, max_side)
    sx, sy = mw / film[0], mh / film[1]
    out = np.zeros((mh, mw), dtype=np.float64)
    for span, cells in parts:
        geometry = processed.geometry(span.part)
        pw, ph = geometry.size
        x0, y0, x1, y1 = processed.to_original_box((0.0, 0.0, float(pw), float(ph)), span.part)
        rows, cols = cells.shape
        cell_area = ((x1 - x0) / cols) * ((y1 - y0) / rows)
        if cell_area <= 0:
            continue
        c0, c1 = math.floor(x0 * sx), min(mw, max(math.floor(x0 * sx) + 1, math.ceil(x1 * sx)))
        r0, r1 = math.floor(y0 * sy), min(mh, max(math.floor(y0 * sy) + 1, math.ceil(y1 * sy)))
        density = resample_film_array((cells / cell_area).astype(np.float32), (r1 - r0, c1 - c0))
        out[r0:r1, c0:c1] += density
    return FilmMap(values=out.astype(np.float32), film_size=film)


def heatmap_png(values: NDArray[np.float32]) -> bytes:
    """The positive part of a map as an RGBA PNG ("hot" colours, transparent where zero).

    Meant as an overlay: scale it to the displayed film (it has the film's aspect).
    """
    from PIL import Image

    v = np.clip(np.nan_to_num(values.astype(np.float64)), 0.0, None)
    peak = float(v.max()) if v.size else 0.0
    norm = v / peak if peak > 0 else v
    rgba = np.zeros((*norm.shape, 4), dtype=np.uint8)
    rgba[..., 0] = np.clip(norm * 3.0, 0, 1) * 255
    rgba[..., 1] = np.clip(norm * 3.0 - 1.0, 0, 1) * 255
    rgba[..., 2] = np.clip(norm * 3.0 - 2.0, 0, 1) * 255
    rgba[..., 3] = np.clip(norm * 1.5, 0, 1) * 200
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
