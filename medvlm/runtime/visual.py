"""Image -> visual input of the language model: the standard path, or slices under a budget."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from medvlm.budget import BudgetPolicy
from medvlm.processing import ImageProcessor, ProcessorConfig
from medvlm.token_reduction import PartFeatures, reduce_visual_tokens

__all__ = ["VisualInput", "build_visual_input", "encode_parts"]


@dataclass(frozen=True)
class VisualInput:
    """What goes where ``<image>`` was.

    Standard path (slicing off): ``pixel_values`` for the model's own image-token replacement,
    ``embeds`` ``None``. Sliced path: ``embeds`` ``[n_tokens, D]`` with the layout separators
    already in place, fed to the language model as ``inputs_embeds``.
    """

    n_tokens: int
    pixel_values: torch.Tensor | None
    embeds: torch.Tensor | None
    details: dict[str, object]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def build_visual_input(
    image: NDArray[np.uint8],
    *,
    model: Any,
    processor_config: ProcessorConfig,
    slicing: bool,
    token_budget: int,
    policy: BudgetPolicy,
    newline_id: int,
    comma_id: int,
    device: torch.device,
    dtype: torch.dtype,
    timings: dict[str, float],
) -> VisualInput:
    """Preprocess ``image`` and, when slicing, encode and reduce it under ``token_budget``."""
    start = time.perf_counter()
    processed = ImageProcessor(processor_config)(image)
    timings["preprocess_ms"] = _ms(start)
    plan = processed.plan
    details: dict[str, object] = {"image": processed.to_dict()}
    overview = processed.overview.to(device=device, dtype=dtype)
    patch = processor_config.patch_size
    if not slicing:
        n_tokens = (overview.shape[-2] // patch) * (overview.shape[-1] // patch)
        details["budget"] = None
        return VisualInput(n_tokens=n_tokens, pixel_values=overview, embeds=None, details=details)

    # Sliced path (also for a film too small to slice: the overview alone is still budgeted).
    grid = plan.grid if plan is not None and processed.slices is not None else None
    start = time.perf_counter()
    need_attention = policy == "attention"
    slice_parts: list[PartFeatures] = []
    if processed.slices is not None:
        slices = processed.slices.to(device=device, dtype=dtype)
        slice_parts = encode_parts(model, slices, role="slice", attention=need_attention)
    overview_parts = encode_parts(model, overview, role="overview", attention=need_attention)
    timings["vision_ms"] = _ms(start)

    start = time.perf_counter()
    reduced = reduce_visual_tokens(
        [*slice_parts, *overview_parts], token_budget, policy, slice_grid=grid
    )
    kept = [model.model.multi_modal_projector(part.features) for part in reduced.parts]
    embeds = layout_embeddings(
        kept,
        grid=grid,
        embed=model.get_input_embeddings(),
        newline_id=newline_id,
        comma_id=comma_id,
    )
    timings["reduce_ms"] = _ms(start)
    details["budget"] = reduced.to_dict()
    return VisualInput(
        n_tokens=int(embeds.shape[0]), pixel_values=None, embeds=embeds, details=details
    )


def encode_parts(
    model: Any, pixel_values: torch.Tensor, *, role: str, attention: bool
) -> list[PartFeatures]:
    """Vision-tower features (the configured feature layer, CLS dropped) of each image in a batch.

    With ``attention``, also the CLS token's attention to each patch in the layer that produced the
    features (heads averaged), computed from that layer's query/key projections.
    """
    tower = model.model.vision_tower
    layer_index = int(model.config.vision_feature_layer)
    out = tower(pixel_values, output_hidden_states=True, return_dict=True)
    hidden = out.hidden_states[layer_index]
    patch = int(tower.config.patch_size)
    rows, cols = pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch
    cls_attn: torch.Tensor | None = None
    if attention:
        n_layers = len(out.hidden_states) - 1
        producing = (n_layers + layer_index) if layer_index < 0 else layer_index - 1
        cls_attn = _cls_attention(tower, producing, out.hidden_states[producing])
    parts = []
    for i in range(hidden.shape[0]):
        parts.append(
            PartFeatures(
                features=hidden[i, 1:],
                grid=(rows, cols),
                role=role,  # type: ignore[arg-type]
                cls_attention=None if cls_attn is None else cls_attn[i],
            )
        )
    return parts


def _cls_attention(tower: Any, layer: int, layer_input: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` CLS-to-patch attention of encoder layer ``layer`` given its input states."""
    block = tower.encoder.layer[layer]
    x = block.norm1(layer_input)
    heads = int(tower.config.num_attention_heads)
    batch, n, width = x.shape
    head_dim = width // heads
    q = block.attention.q_proj(x[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)
    k = block.attention.k_proj(x).view(batch, n, heads, head_dim).transpose(1, 2)
    scores = (q.float() @ k.float().transpose(-1, -2)) / (head_dim**0.5)
    weights: torch.Tensor = scores.softmax(dim=-1)[:, :, 0, 1:]
    return weights.mean(dim=1)


def layout_embeddings(
    features: list[torch.Tensor],
    *,
    grid: tuple[int, int] | None,
    embed: Any,
    newline_id: int,
    comma_id: int,
) -> torch.Tensor:
    """The spatial schema: slices row-major, ``,`` after a slice that is not last in its row, a
    newline after the last slice of every row, then the overview (the last entry of ``features``).
    ``grid`` is ``(cols, rows)`` of the slices, ``None`` when there are none.
    """
    slices, overview = features[:-1], features[-1]
    if grid is None:
        if slices:
            raise ValueError(f"{len(slices)} slice features but no slice grid")
        return overview
    cols, rows = grid
    if len(slices) != cols * rows:
        raise ValueError(f"{len(slices)} slice features for a {cols} x {rows} grid")
    device = overview.device
    comma = embed(torch.tensor([comma_id], device=device)).to(overview.dtype)
    newline = embed(torch.tensor([newline_id], device=device)).to(overview.dtype)
    pieces: list[torch.Tensor] = []
    for index, feats in enumerate(slices):
        pieces.append(feats)
        col = index % cols
        pieces.append(newline if col == cols - 1 else comma)
    pieces.append(overview)
    return torch.cat(pieces, dim=0)
