"""LLaVA-UHD image modularization as pure geometry (no pixels).

Implements ``specs/uhd_slicing.md``: given an image of ``width x height`` pixels and a vision
encoder of native side ``S`` and patch size ``P``, choose a grid of at most ``M`` slices (or no
slicing), the size each slice is resized to, and the size of the overview (global) image. The
geometry reproduces the reference implementation (LLaVA-UHD-v1, ``slice_image_minicpm``) exactly,
including its floating-point near-ties, and adds the guards the reference lacks:

* zero, negative or non-integer sizes raise :class:`~medvlm.errors.SlicingError`;
* extreme aspect ratios are capped: no encoded image has more than ``max_patches_per_image``
  patches or a side longer than ``max_long_edge`` pixels. The defaults (``S*S // (P*P)`` patches,
  ``S*S // P`` pixels) only bind where the reference would make a strip one patch wide, so every
  sane geometry is reproduced unchanged; callers may tighten them. A capped plan says so
  (``capped``, ``cap_reasons``).

Token accounting follows the spatial schema: each encoded image yields ``Q`` tokens
(``tokens_per_image``, or its patch count when there is no compression); slices are laid out row
by row with a ``,`` after each slice that is not last in its row and a newline after the last
slice of every row, then the overview. Visual tokens are ``Q`` unsliced, else ``n*Q + n + Q``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Final, Literal

from medvlm.errors import SlicingError

__all__ = [
    "ROW_SEPARATOR",
    "SLICE_SEPARATOR",
    "LayoutItem",
    "SlicePlan",
    "default_max_long_edge",
    "default_max_patches_per_image",
    "fit_size",
    "plan_slices",
    "snap",
]

Size = tuple[int, int]
"""A ``(width, height)`` pair in pixels."""

Box = tuple[float, float, float, float]
"""An ``(x0, y0, x1, y1)`` box in pixels, edges of pixels (continuous coordinates)."""

SLICE_SEPARATOR: Final = ","
"""Separator after a slice that is not the last in its row (spatial schema)."""
ROW_SEPARATOR: Final = "\n"
"""Separator after the last slice of every row (spatial schema)."""

LayoutItem = int | Literal[",", "\n", "overview"]
"""One entry of :meth:`SlicePlan.layout`: a slice index, a separator, or the overview."""


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SlicingError(
            f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}; "
            "pass the size in whole pixels"
        )
    if value <= 0:
        raise SlicingError(
            f"{name} must be a positive integer, got {value}; an image or encoder size of zero or "
            "less cannot be sliced: check the image decoding"
        )
    return int(value)


def snap(x: int, d: int) -> int:
    """Floor ``x`` to a multiple of ``d``, never below ``d``: ``max(floor(x / d) * d, d)``."""
    return max((x // d) * d, d)


def fit_size(
    width: float, height: float, *, native_size: int, patch_size: int, upscale: bool
) -> Size:
    """The spec's ``fit(w, h, upscale)``: area about ``S^2``, aspect kept, sides snapped to ``P``.

    When ``w*h > S*S`` or ``upscale``: ``r = w/h``, ``h' = int(S / sqrt(r))``, ``w' = int(h' * r)``
    (from the truncated ``h'``); otherwise the size is kept. Both sides are then snapped to ``P``.
    ``width`` and ``height`` may be floats (the reference passes grid cells as floats).
    """
    w, h = width, height
    if not (w > 0 and h > 0 and native_size > 0 and patch_size > 0):
        raise SlicingError(
            f"fit_size needs positive sizes, got {width}x{height} at native_size {native_size}, "
            f"patch_size {patch_size}"
        )
    if w * h > native_size * native_size or upscale:
        r = w / h
        new_h = int(native_size / math.sqrt(r))
        new_w = int(new_h * r)
    else:
        new_w, new_h = int(w), int(h)
    return snap(new_w, patch_size), snap(new_h, patch_size)


def default_max_patches_per_image(native_size: int, patch_size: int) -> int:
    """Default cap on patches per encoded image: ``S*S // (P*P)`` (1,369 at 518/14, 576 at 336/14).

    ``fit`` never exceeds it unless one side was raised to ``P`` by ``snap``, i.e. only for strips.
    """
    return (native_size * native_size) // (patch_size * patch_size)


def default_max_long_edge(native_size: int, patch_size: int) -> int:
    """Default cap on the long edge of an encoded image: ``S*S // P`` pixels.

    That is the long edge of a one-patch-wide strip holding the default patch cap, so it never binds
    where the patch cap does not; pass a smaller value to bound position-embedding interpolation.
    """
    return (native_size * native_size) // patch_size


def _cap_size(
    size: Size, *, patch_size: int, max_patches: int, max_long_edge: int
) -> tuple[Size, str]:
    """Shrink ``size`` (multiples of ``P``) until it satisfies both caps; say why it changed.

    The long side is shortened first (that is what an extreme aspect ratio inflates); the short
    side is shortened only if a one-patch-wide long side still cannot fit the patch cap.
    """
    w, h = size
    reasons: list[str] = []
    long_limit = snap(max_long_edge, patch_size)
    if max(w, h) > long_limit:
        reasons.append(f"long edge {max(w, h)} px > max_long_edge {max_long_edge}")
        if w >= h:
            w = long_limit
            h = min(h, long_limit)
        else:
            h = long_limit
            w = min(w, long_limit)
    patches = (w // patch_size) * (h // patch_size)
    if patches > max_patches:
        reasons.append(f"{patches} patches > max_patches_per_image {max_patches}")
        cols, rows = w // patch_size, h // patch_size
        if cols >= rows:
            cols = max(max_patches // rows, 1)
            if cols * rows > max_patches:
                rows = max(max_patches // cols, 1)
        else:
            rows = max(max_patches // cols, 1)
            if cols * rows > max_patches:
                cols = max(max_patches // rows, 1)
        w, h = cols * patch_size, rows * patch_size
    if not reasons:
        return size, ""
    return (w, h), f"{size[0]}x{size[1]} capped to {w}x{h}: " + "; ".join(reasons)


@dataclass(frozen=True)
class SlicePlan:
    """Where each pixel of an image goes: the grid, slice and overview sizes, and the token count.

    Sizes are ``(width, height)`` in pixels, grids ``(cols, rows)``. When the image is not
    sliced, ``grid``, ``slice_size`` and ``resized_size`` are ``None``, ``n_slices`` is 0 and the
    overview is the single encoded image. Slices are numbered row-major (``row * cols + col``).
    """

    image_size: Size
    native_size: int
    patch_size: int
    max_slices: int
    grid: Size | None
    slice_size: Size | None
    overview_size: Size
    n_slices: int
    resized_size: Size | None
    tokens_per_image: int | None
    max_patches_per_image: int
    max_long_edge: int
    capped: bool
    cap_reasons: tuple[str, ...]

    @property
    def sliced(self) -> bool:
        """Whether the image is cut into slices (``grid`` is not ``None``)."""
        return self.grid is not None

    @property
    def cap_reason(self) -> str | None:
        """Why the plan was capped, in one line, or ``None`` when it was not."""
        return "; ".join(self.cap_reasons) if self.cap_reasons else None

    @property
    def n_images(self) -> int:
        """Encoded images: the slices plus the overview."""
        return self.n_slices + 1

    @property
    def slice_patch_grid(self) -> Size | None:
        """Patches per slice as ``(cols, rows)``, or ``None`` unsliced."""
        if self.slice_size is None:
            return None
        return self.slice_size[0] // self.patch_size, self.slice_size[1] // self.patch_size

    @property
    def overview_patch_grid(self) -> Size:
        """Patches of the overview as ``(cols, rows)``."""
        return self.overview_size[0] // self.patch_size, self.overview_size[1] // self.patch_size

    @property
    def patches_per_slice(self) -> int:
        """Patch tokens of one slice (0 unsliced)."""
        grid = self.slice_patch_grid
        return 0 if grid is None else grid[0] * grid[1]

    @property
    def patches_overview(self) -> int:
        """Patch tokens of the overview."""
        cols, rows = self.overview_patch_grid
        return cols * rows

    @property
    def tokens_per_slice(self) -> int:
        """Tokens one slice contributes: ``Q`` with compression, else its patches (0 unsliced)."""
        if not self.sliced:
            return 0
        return (
            self.tokens_per_image if self.tokens_per_image is not None else self.patches_per_slice
        )

    @property
    def tokens_overview(self) -> int:
        """Tokens the overview contributes: ``Q`` with compression, else its patches."""
        return self.tokens_per_image if self.tokens_per_image is not None else self.patches_overview

    @property
    def separator_tokens(self) -> int:
        """Layout tokens: one ``,`` or newline after every slice (``n``), none unsliced."""
        return self.n_slices

    @property
    def visual_tokens(self) -> int:
        """Visual tokens of the spatial schema: ``Q`` unsliced, else ``n*Q + n + Q``."""
        return self.n_slices * self.tokens_per_slice + self.separator_tokens + self.tokens_overview

    @property
    def overview_scale(self) -> tuple[float, float]:
        """Overview pixels per original pixel, ``(sx, sy)``."""
        return self.overview_size[0] / self.image_size[0], self.overview_size[1] / self.image_size[
            1
        ]

    @property
    def overview_aspect_distortion(self) -> float:
        """``sx / sy`` of the overview: 1.0 keeps the aspect exactly; > 1 stretches horizontally."""
        sx, sy = self.overview_scale
        return sx / sy

    @property
    def resized_scale(self) -> tuple[float, float] | None:
        """Sliced (resized) image pixels per original pixel, ``(sx, sy)``; ``None`` unsliced."""
        if self.resized_size is None:
            return None
        return self.resized_size[0] / self.image_size[0], self.resized_size[1] / self.image_size[1]

    @property
    def resized_aspect_distortion(self) -> float | None:
        """``sx / sy`` of the sliced image (1.0 keeps the aspect); ``None`` unsliced."""
        scale = self.resized_scale
        return None if scale is None else scale[0] / scale[1]

    def layout(self) -> tuple[LayoutItem, ...]:
        """The spatial schema's order of slices, separators and the overview.

        Slice indices row by row, each followed by :data:`SLICE_SEPARATOR` (not last in its row)
        or :data:`ROW_SEPARATOR` (last in its row, including the final row), then ``"overview"``.
        The runtime maps the two separators to the tokenizer's own token ids.
        """
        items: list[LayoutItem] = []
        if self.grid is not None:
            cols, rows = self.grid
            for row in range(rows):
                for col in range(cols):
                    items.append(row * cols + col)
                    items.append(SLICE_SEPARATOR if col < cols - 1 else ROW_SEPARATOR)
        items.append("overview")
        return tuple(items)

    def slice_position(self, index: int) -> Size:
        """``(col, row)`` of slice ``index`` (row-major)."""
        if self.grid is None or self.n_slices == 0:
            raise SlicingError("this plan has no slices: the image was not sliced")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n_slices:
            raise SlicingError(
                f"slice index {index!r} is out of range: this plan has {self.n_slices} slices "
                f"(0..{self.n_slices - 1})"
            )
        cols = self.grid[0]
        return index % cols, index // cols

    def slice_box_resized(self, index: int) -> tuple[int, int, int, int]:
        """Box of slice ``index`` in the resized image: ``(x0, y0, x1, y1)``, integer pixels."""
        col, row = self.slice_position(index)
        assert self.slice_size is not None
        sw, sh = self.slice_size
        return col * sw, row * sh, (col + 1) * sw, (row + 1) * sh

    def slice_box_original(self, index: int) -> Box:
        """Box of slice ``index`` in original image pixels (continuous coordinates)."""
        x0, y0, x1, y1 = self.slice_box_resized(index)
        scale = self.resized_scale
        assert scale is not None
        sx, sy = scale
        return x0 / sx, y0 / sy, x1 / sx, y1 / sy

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record of the plan (provenance; traces a flag to the pixels seen)."""
        return {
            "image_size": list(self.image_size),
            "native_size": self.native_size,
            "patch_size": self.patch_size,
            "max_slices": self.max_slices,
            "sliced": self.sliced,
            "grid": None if self.grid is None else list(self.grid),
            "slice_size": None if self.slice_size is None else list(self.slice_size),
            "overview_size": list(self.overview_size),
            "n_slices": self.n_slices,
            "resized_size": None if self.resized_size is None else list(self.resized_size),
            "overview_scale": list(self.overview_scale),
            "overview_aspect_distortion": self.overview_aspect_distortion,
            "resized_scale": None if self.resized_scale is None else list(self.resized_scale),
            "resized_aspect_distortion": self.resized_aspect_distortion,
            "patches_per_slice": self.patches_per_slice,
            "patches_overview": self.patches_overview,
            "tokens_per_image": self.tokens_per_image,
            "separator_tokens": self.separator_tokens,
            "visual_tokens": self.visual_tokens,
            "max_patches_per_image": self.max_patches_per_image,
            "max_long_edge": self.max_long_edge,
            "capped": self.capped,
            "cap_reasons": list(self.cap_reasons),
        }


def _choose_grid(width: int, height: int, n0: int, max_slices: int) -> Size:
    """The reference's grid choice among counts ``n0-1, n0, n0+1`` (first strictly smaller)."""
    counts = [n for n in (n0 - 1, n0, n0 + 1) if n != 1 and n <= max_slices]
    log_ratio = math.log(width / height)
    best: Size = (1, 1)
    best_score = math.inf
    for n in counts:
        for cols in range(1, n + 1):
            if n % cols:
                continue
            rows = n // cols
            score = abs(log_ratio - math.log(cols / rows))
            if score < best_score:
                best, best_score = (cols, rows), score
    return best


def plan_slices(
    width: int,
    height: int,
    *,
    native_size: int,
    patch_size: int,
    max_slices: int,
    max_patches_per_image: int | None = None,
    max_long_edge: int | None = None,
    tokens_per_image: int | None = None,
) -> SlicePlan:
    """Plan LLaVA-UHD slicing of a ``width x height`` image for an encoder of side ``native_size``.

    Args:
        width, height: original image size in pixels (positive integers).
        native_size: the encoder's native side ``S`` (518 for LLaVA-Rad, 336 upstream).
        patch_size: the encoder's patch size ``P`` (14).
        max_slices: the maximum slice count ``M``; 1 never slices.
        max_patches_per_image: cap on patches of any encoded image (default
            :func:`default_max_patches_per_image`).
        max_long_edge: cap on the long side of any encoded image in pixels (default
            :func:`default_max_long_edge`).
        tokens_per_image: ``Q`` when a compression module maps every encoded image to a fixed
            number of tokens; ``None`` counts each image's patches.

    Raises:
        SlicingError: a size or parameter is not a positive integer, ``patch_size > native_size``,
            or a cap is smaller than one patch.
    """
    width = _check_positive_int("width", width)
    height = _check_positive_int("height", height)
    native_size = _check_positive_int("native_size", native_size)
    patch_size = _check_positive_int("patch_size", patch_size)
    max_slices = _check_positive_int("max_slices", max_slices)
    if patch_size > native_size:
        raise SlicingError(
            f"patch_size {patch_size} is larger than native_size {native_size}: check the encoder "
            "config (LLaVA-Rad: native 518, patch 14)"
        )
    if max_patches_per_image is None:
        max_patches_per_image = default_max_patches_per_image(native_size, patch_size)
    max_patches_per_image = _check_positive_int("max_patches_per_image", max_patches_per_image)
    if max_long_edge is None:
        max_long_edge = default_max_long_edge(native_size, patch_size)
    max_long_edge = _check_positive_int("max_long_edge", max_long_edge)
    if max_long_edge < patch_size:
        raise SlicingError(
            f"max_long_edge {max_long_edge} is smaller than one patch ({patch_size} px): "
            "raise it to at least the patch size"
        )
    if tokens_per_image is not None:
        tokens_per_image = _check_positive_int("tokens_per_image", tokens_per_image)

    def fit(w: float, h: float, upscale: bool) -> Size:
        return fit_size(w, h, native_size=native_size, patch_size=patch_size, upscale=upscale)

    def cap(size: Size, what: str, reasons: list[str]) -> Size:
        capped, reason = _cap_size(
            size,
            patch_size=patch_size,
            max_patches=max_patches_per_image,
            max_long_edge=max_long_edge,
        )
        if reason:
            reasons.append(f"{what} {reason}")
        return capped

    reasons: list[str] = []
    n0 = min(math.ceil(width * height / (native_size * native_size)), max_slices)
    grid: Size | None = None
    slice_size: Size | None = None
    resized_size: Size | None = None
    if n0 <= 1:
        overview = cap(fit(width, height, True), "image", reasons)
    else:
        grid = _choose_grid(width, height, n0, max_slices)
        overview = cap(fit(width, height, False), "overview", reasons)
        cols, rows = grid
        cell_w, cell_h = max(width // cols, 1), max(height // rows, 1)
        slice_size = cap(fit(cell_w, cell_h, True), "slice", reasons)
        resized_size = (slice_size[0] * cols, slice_size[1] * rows)
    n_slices = 0 if grid is None else grid[0] * grid[1]
    return SlicePlan(
        image_size=(width, height),
        native_size=native_size,
        patch_size=patch_size,
        max_slices=max_slices,
        grid=grid,
        slice_size=slice_size,
        overview_size=overview,
        n_slices=n_slices,
        resized_size=resized_size,
        tokens_per_image=tokens_per_image,
        max_patches_per_image=max_patches_per_image,
        max_long_edge=max_long_edge,
        capped=bool(reasons),
        cap_reasons=tuple(reasons),
    )
