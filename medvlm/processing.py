"""Image processor: an 8-bit grey display image to normalised encoder tensors (overview + slices).

The processor holds a :class:`ProcessorConfig` (round-trips to JSON) and never mutates its input.
Two ways to turn a film into model input:

* slicing off (LLaVA-Rad's default; it was not trained with slices): ``resize_mode="reference"``
  reproduces LLaVA-Rad's preprocessing (shortest side to ``native_size`` with bicubic resampling,
  centre crop ``native_size`` square; the crop cuts the top and bottom of a portrait film), or
  ``resize_mode="fit"`` resizes the whole film to about ``native_size^2`` pixels keeping its
  aspect (LLaVA-UHD's unsliced ``fit``);
* slicing on: the LLaVA-UHD plan (:mod:`medvlm.slicing`), chosen within the visual-token budget
  (:func:`medvlm.budget.choose_plan_within_budget`) when one is configured: the overview, and the
  whole film resized to ``slice_w*cols x slice_h*rows`` and cut row-major into slices.

Grey is replicated to three channels and normalised with the encoder's mean and std (OpenAI-CLIP
values for LLaVA-Rad). Each encoded part records how its pixels map back to the original image,
so a box predicted on a slice or on the overview can be drawn on the film
(:meth:`ProcessedImage.to_original_box`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from medvlm.budget import (
    DEFAULT_MAX_POOL_STRIDE,
    DEFAULT_VISUAL_TOKEN_BUDGET,
    BudgetedPlan,
    BudgetPolicy,
    choose_plan_within_budget,
)
from medvlm.errors import ProcessingError
from medvlm.slicing import SlicePlan, plan_slices

__all__ = [
    "CHECKPOINT_KEYS",
    "CLIP_IMAGE_MEAN",
    "CLIP_IMAGE_STD",
    "PREPROCESSOR_CONFIG",
    "ImageProcessor",
    "PartGeometry",
    "PartRef",
    "ProcessedImage",
    "ProcessorConfig",
    "ResizeMode",
]

CLIP_IMAGE_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI-CLIP channel mean (LLaVA-Rad's image processor)."""
CLIP_IMAGE_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI-CLIP channel std (LLaVA-Rad's image processor)."""

PREPROCESSOR_CONFIG = "preprocessor_config.json"
"""The checkpoint file that holds its image processor config (transformers' convention)."""
CHECKPOINT_KEYS = (
    "native_size",
    "patch_size",
    "image_mean",
    "image_std",
    "resize_mode",
    "max_patches_per_image",
    "max_long_edge",
    "tokens_per_image",
    "max_pool_stride",
)
"""What a checkpoint's ``preprocessor_config.json`` fixes: how the model was trained to see. The
rest (slicing, max slices, the visual-token budget and its policy) is the runtime's setting."""

ResizeMode = Literal["reference", "fit"]
PartRef = int | Literal["overview"]
"""A slice index (row-major) or ``"overview"``."""

Box = tuple[float, float, float, float]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ProcessingError(
            f"processor config {name} must be a positive integer, got {value!r}; fix the config"
        )
    return value


def _optional_positive_int(name: str, value: object) -> int | None:
    return None if value is None else _positive_int(name, value)


def _triple(name: str, value: object, *, positive: bool) -> tuple[float, float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ProcessingError(
            f"processor config {name} must be three numbers (R, G, B), got {value!r}"
        )
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ProcessingError(
                f"processor config {name} must hold finite numbers, got {value!r}"
            )
        if positive and v <= 0:
            raise ProcessingError(f"processor config {name} must be > 0, got {value!r}")
        out.append(float(v))
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class ProcessorConfig:
    """How a display image becomes encoder input. Validated at construction; JSON round trip.

    Attributes:
        native_size: the encoder's input side (518 for LLaVA-Rad's BiomedCLIP-CXR).
        patch_size: the encoder's patch size (14).
        image_mean, image_std: per-channel normalisation (OpenAI-CLIP values).
        slicing: cut the film into LLaVA-UHD slices plus an overview. Off for LLaVA-Rad (not trained
            with slices); on for checkpoints trained with slices.
        max_slices: LLaVA-UHD's maximum slice count ``M``.
        resize_mode: without slicing, ``reference`` (shortest side to ``native_size``, centre crop:
            LLaVA-Rad's preprocessing) or ``fit`` (whole film, aspect kept).
        max_patches_per_image, max_long_edge: slicing caps (``None``: the defaults of
            :func:`medvlm.slicing.plan_slices`).
        tokens_per_image: ``Q`` when a compression module makes every encoded image ``Q`` tokens;
            ``None`` counts patches (LLaVA-Rad).
        visual_token_budget: visual tokens allowed per study (``None``: no budget); with slicing,
            the plan is chosen so that ``budget_policy`` can meet it.
        budget_policy: how the runtime reduces encoder features to the budget.
        max_pool_stride: the most a pooled grid side may shrink when choosing the plan (also the
            floor, about ``1 / stride^2`` of a part's tokens, assumed for ``attention``; with
            ``none`` the plan must fit the budget unreduced).
    """

    native_size: int = 518
    patch_size: int = 14
    image_mean: tuple[float, float, float] = CLIP_IMAGE_MEAN
    image_std: tuple[float, float, float] = CLIP_IMAGE_STD
    slicing: bool = False
    max_slices: int = 7
    resize_mode: ResizeMode = "reference"
    max_patches_per_image: int | None = None
    max_long_edge: int | None = None
    tokens_per_image: int | None = None
    visual_token_budget: int | None = DEFAULT_VISUAL_TOKEN_BUDGET
    budget_policy: BudgetPolicy = "pool"
    max_pool_stride: int = DEFAULT_MAX_POOL_STRIDE

    def __post_init__(self) -> None:
        _positive_int("native_size", self.native_size)
        _positive_int("patch_size", self.patch_size)
        if self.patch_size > self.native_size:
            raise ProcessingError(
                f"processor config patch_size {self.patch_size} is larger than native_size "
                f"{self.native_size}: check the encoder config"
            )
        if self.native_size % self.patch_size:
            raise ProcessingError(
                f"processor config native_size {self.native_size} is not a multiple of "
                f"patch_size {self.patch_size}: the encoder would drop pixels"
            )
        object.__setattr__(
            self, "image_mean", _triple("image_mean", self.image_mean, positive=False)
        )
        object.__setattr__(self, "image_std", _triple("image_std", self.image_std, positive=True))
        if not isinstance(self.slicing, bool):
            raise ProcessingError(
                f"processor config slicing must be true or false, got {self.slicing!r}"
            )
        _positive_int("max_slices", self.max_slices)
        if self.resize_mode not in get_args(ResizeMode):
            raise ProcessingError(
                f"processor config resize_mode must be one of {list(get_args(ResizeMode))}, "
                f"got {self.resize_mode!r}"
            )
        _optional_positive_int("max_patches_per_image", self.max_patches_per_image)
        _optional_positive_int("max_long_edge", self.max_long_edge)
        _optional_positive_int("tokens_per_image", self.tokens_per_image)
        _optional_positive_int("visual_token_budget", self.visual_token_budget)
        if self.budget_policy not in get_args(BudgetPolicy):
            raise ProcessingError(
                f"processor config budget_policy must be one of {list(get_args(BudgetPolicy))}, "
                f"got {self.budget_policy!r}"
            )
        _positive_int("max_pool_stride", self.max_pool_stride)

    def to_dict(self) -> dict[str, object]:
        """The config as plain JSON types."""
        data = asdict(self)
        data["image_mean"] = list(self.image_mean)
        data["image_std"] = list(self.image_std)
        return data

    def to_json(self) -> str:
        """The config as a JSON object (sorted keys); :meth:`from_json` reads it back."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ProcessorConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProcessingError(
                f"unknown processor config keys {unknown}: expected some of {sorted(known)}"
            )
        values = dict(data)
        for key in ("image_mean", "image_std"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def save_pretrained(self, model_dir: Path | str) -> Path:
        """Write the checkpoint part (:data:`CHECKPOINT_KEYS`) as ``preprocessor_config.json``."""
        data = self.to_dict()
        path = Path(model_dir) / PREPROCESSOR_CONFIG
        path.write_text(json.dumps({k: data[k] for k in CHECKPOINT_KEYS}, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, model_dir: Path | str, **runtime: object) -> ProcessorConfig | None:
        """The config a checkpoint's ``preprocessor_config.json`` holds, with ``runtime`` settings
        (slicing, max_slices, visual_token_budget, budget_policy) on top; ``None`` without one.

        Keys of the file outside :data:`CHECKPOINT_KEYS` are refused.
        """
        path = Path(model_dir) / PREPROCESSOR_CONFIG
        if not path.is_file():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProcessingError(f"cannot read {str(path)!r}: {exc}") from exc
        stored = cls.from_json(text).to_dict()
        extra = sorted(set(json.loads(text)) - set(CHECKPOINT_KEYS))
        if extra:
            raise ProcessingError(
                f"{str(path)!r} sets {extra}: those are runtime settings, not the checkpoint's; "
                f"keep only {list(CHECKPOINT_KEYS)}"
            )
        return cls.from_dict({**{k: stored[k] for k in CHECKPOINT_KEYS}, **runtime})

    @classmethod
    def from_json(cls, text: str) -> ProcessorConfig:
        """Read a config written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProcessingError(f"processor config is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ProcessingError(
                f"processor config JSON must be an object, got {type(data).__name__}"
            )
        return cls.from_dict(data)


@dataclass(frozen=True)
class PartGeometry:
    """Where an encoded part's pixels come from in the original image.

    The original image was resized to ``resized_size`` (scale ``resized_size / original_size`` per
    axis) and the part is the window of ``size`` at ``offset`` (top-left, resized pixels):
    ``original = (part_pixel + offset) * original_size / resized_size``.
    """

    size: tuple[int, int]
    resized_size: tuple[int, int]
    offset: tuple[int, int]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready record."""
        return {
            "size": list(self.size),
            "resized_size": list(self.resized_size),
            "offset": list(self.offset),
        }


@dataclass(frozen=True)
class ProcessedImage:
    """Encoder input for one film, and how to map model boxes back to the film.

    ``overview`` is ``[1, 3, h, w]`` float32, normalised; ``slices`` is ``[n, 3, sh, sw]``
    (row-major) or ``None``. ``plan`` is the slicing plan (``None`` in ``reference`` mode);
    ``budget_choice`` records how the plan was chosen within the visual-token budget.
    """

    overview: torch.Tensor
    slices: torch.Tensor | None
    plan: SlicePlan | None
    budget_choice: BudgetedPlan | None
    original_size: tuple[int, int]
    overview_geometry: PartGeometry
    slice_geometries: tuple[PartGeometry, ...]
    config: ProcessorConfig

    @property
    def n_slices(self) -> int:
        """Slices encoded (0 when not sliced)."""
        return len(self.slice_geometries)

    @property
    def visual_tokens(self) -> int:
        """Visual tokens before any budget reduction (spatial schema)."""
        if self.plan is not None:
            return self.plan.visual_tokens
        if self.config.tokens_per_image is not None:
            return self.config.tokens_per_image
        w, h = self.overview_geometry.size
        return (w // self.config.patch_size) * (h // self.config.patch_size)

    def geometry(self, part: PartRef) -> PartGeometry:
        """The geometry of ``part``: a slice index or ``"overview"``."""
        if part == "overview":
            return self.overview_geometry
        if isinstance(part, bool) or not isinstance(part, int):
            raise ProcessingError(f"part must be a slice index or 'overview', got {part!r}")
        if not 0 <= part < len(self.slice_geometries):
            raise ProcessingError(
                f"slice index {part} is out of range: this image has {len(self.slice_geometries)} "
                "slices; use 'overview' for the global image"
            )
        return self.slice_geometries[part]

    def to_original_box(self, box: Box, part: PartRef, *, normalized: bool = False) -> Box:
        """Map ``box`` (x0, y0, x1, y1) on ``part`` to original image pixels, clipped to the image.

        ``box`` is in the part's pixels, or in 0..1 of the part's width and height when
        ``normalized``. The reference centre crop is accounted for: a box on the cropped overview
        lands in the central band of the film.
        """
        geometry = self.geometry(part)
        if len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in box
        ):
            raise ProcessingError(f"box must be four finite numbers (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if x1 < x0 or y1 < y0:
            raise ProcessingError(f"box {box!r} has x1 < x0 or y1 < y0: pass (x0, y0, x1, y1)")
        pw, ph = geometry.size
        if normalized:
            if min(x0, y0) < 0.0 or max(x1, y1) > 1.0:
                raise ProcessingError(
                    f"normalized box {box!r} is outside 0..1: pass pixel coordinates with "
                    "normalized=False"
                )
            x0, x1, y0, y1 = x0 * pw, x1 * pw, y0 * ph, y1 * ph
        width, height = self.original_size
        rw, rh = geometry.resized_size
        ox, oy = geometry.offset

        def map_x(x: float) -> float:
            return min(max((x + ox) * width / rw, 0.0), float(width))

        def map_y(y: float) -> float:
            return min(max((y + oy) * height / rh, 0.0), float(height))

        return map_x(x0), map_y(y0), map_x(x1), map_y(y1)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready record of what the model saw (no pixels): for provenance."""
        return {
            "original_size": list(self.original_size),
            "config": self.config.to_dict(),
            "plan": None if self.plan is None else self.plan.to_dict(),
            "budget_choice": None if self.budget_choice is None else self.budget_choice.to_dict(),
            "overview_shape": list(self.overview.shape),
            "slices_shape": None if self.slices is None else list(self.slices.shape),
            "overview_geometry": self.overview_geometry.to_dict(),
            "slice_geometries": [g.to_dict() for g in self.slice_geometries],
            "visual_tokens": self.visual_tokens,
        }


_MAX_REFERENCE_RESIZE_FACTOR = 16
"""Reference mode resizes the whole film when it is at most this many ``native_size^2`` pixels
(aspect up to 16:1); beyond, only the part under the centre crop is resized."""


def _reference_resized_size(width: int, height: int, side: int) -> tuple[int, int]:
    """Shortest side to ``side``, long side ``int(side * long / short)`` (transformers' rule)."""
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


class ImageProcessor:
    """Turns an ``H x W`` grey uint8 display image into normalised encoder tensors."""

    def __init__(self, config: ProcessorConfig | None = None) -> None:
        self._config = config if config is not None else ProcessorConfig()
        self._mean = torch.tensor(self._config.image_mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(self._config.image_std, dtype=torch.float32).view(3, 1, 1)

    @property
    def config(self) -> ProcessorConfig:
        """The processor's (immutable) config."""
        return self._config

    def plan_for(self, width: int, height: int) -> tuple[SlicePlan | None, BudgetedPlan | None]:
        """The slicing plan (and budget choice) this processor uses for a ``width x height`` film.

        ``(None, None)`` in ``reference`` mode without slicing.
        """
        c = self._config
        if not c.slicing:
            if c.resize_mode == "reference":
                return None, None
            plan = plan_slices(
                width,
                height,
                native_size=c.native_size,
                patch_size=c.patch_size,
                max_slices=1,
                max_patches_per_image=c.max_patches_per_image,
                max_long_edge=c.max_long_edge,
                tokens_per_image=c.tokens_per_image,
            )
            return plan, None
        if c.visual_token_budget is None:
            plan = plan_slices(
                width,
                height,
                native_size=c.native_size,
                patch_size=c.patch_size,
                max_slices=c.max_slices,
                max_patches_per_image=c.max_patches_per_image,
                max_long_edge=c.max_long_edge,
                tokens_per_image=c.tokens_per_image,
            )
            return plan, None
        choice = choose_plan_within_budget(
            width,
            height,
            native_size=c.native_size,
            patch_size=c.patch_size,
            max_slices=c.max_slices,
            budget=c.visual_token_budget,
            # Policy 'none' reduces nothing: the plan itself must fit.
            max_pool_stride=1 if c.budget_policy == "none" else c.max_pool_stride,
            max_patches_per_image=c.max_patches_per_image,
            max_long_edge=c.max_long_edge,
            tokens_per_image=c.tokens_per_image,
        )
        return choice.plan, choice

    def __call__(self, image: NDArray[np.uint8]) -> ProcessedImage:
        """Process one display image (never mutated) into overview and slice tensors."""
        grey = self._check_image(image)
        height, width = grey.shape
        source = Image.fromarray(grey)
        plan, choice = self.plan_for(width, height)
        c = self._config
        if plan is None:
            resized = _reference_resized_size(width, height, c.native_size)
            left = (resized[0] - c.native_size) // 2
            top = (resized[1] - c.native_size) // 2
            if resized[0] * resized[1] <= _MAX_REFERENCE_RESIZE_FACTOR * c.native_size**2:
                full = self._to_tensor(source, resized)
                overview = full[:, top : top + c.native_size, left : left + c.native_size]
            else:
                # An extreme strip: resizing it whole would take gigabytes; resize only the
                # source region under the crop (bicubic weights may differ by a grey level).
                crop_box = (
                    left * width / resized[0],
                    top * height / resized[1],
                    (left + c.native_size) * width / resized[0],
                    (top + c.native_size) * height / resized[1],
                )
                overview = self._to_tensor(source, (c.native_size, c.native_size), crop_box)
            overview_geometry = PartGeometry((c.native_size, c.native_size), resized, (left, top))
            return ProcessedImage(
                overview=overview.unsqueeze(0).contiguous(),
                slices=None,
                plan=None,
                budget_choice=None,
                original_size=(width, height),
                overview_geometry=overview_geometry,
                slice_geometries=(),
                config=c,
            )
        overview = self._to_tensor(source, plan.overview_size).unsqueeze(0)
        overview_geometry = PartGeometry(plan.overview_size, plan.overview_size, (0, 0))
        slices: torch.Tensor | None = None
        geometries: tuple[PartGeometry, ...] = ()
        if plan.grid is not None and plan.slice_size is not None and plan.resized_size is not None:
            cols, rows = plan.grid
            sw, sh = plan.slice_size
            full = self._to_tensor(source, plan.resized_size)
            slices = (
                full.reshape(3, rows, sh, cols, sw)
                .permute(1, 3, 0, 2, 4)
                .reshape(rows * cols, 3, sh, sw)
                .contiguous()
            )
            geometries = tuple(
                PartGeometry((sw, sh), plan.resized_size, plan.slice_box_resized(i)[:2])
                for i in range(plan.n_slices)
            )
        return ProcessedImage(
            overview=overview,
            slices=slices,
            plan=plan,
            budget_choice=choice,
            original_size=(width, height),
            overview_geometry=overview_geometry,
            slice_geometries=geometries,
            config=c,
        )

    @staticmethod
    def _check_image(image: object) -> NDArray[np.uint8]:
        if not isinstance(image, np.ndarray):
            raise ProcessingError(
                f"image must be a numpy array (H x W, uint8), got {type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise ProcessingError(
                f"image must be uint8, got {image.dtype}: window and rescale the radiograph to an "
                "8-bit display image first (VOI LUT or window, then quantise)"
            )
        if image.ndim != 2:
            raise ProcessingError(
                f"image must be a 2-D grey image (H x W), got shape {image.shape}: pass the grey "
                "display image, not RGB or a stack"
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ProcessingError(f"image is empty (shape {image.shape}): check the decoding")
        return np.ascontiguousarray(image)

    def _to_tensor(
        self,
        source: Image.Image,
        size: tuple[int, int],
        box: tuple[float, float, float, float] | None = None,
    ) -> torch.Tensor:
        """Bicubic resize (of ``box``) to ``size`` (w, h), grey to RGB, normalise: [3, h, w]."""
        if box is None and source.size == size:
            resized = source
        else:
            resized = source.resize(size, Image.Resampling.BICUBIC, box=box)
        pixels = torch.from_numpy(np.array(resized, dtype=np.float32)) / 255.0
        return (pixels.unsqueeze(0).expand(3, -1, -1) - self._mean) / self._std
