"""Relevance maps from the local LLaVA-Rad runtime: the same visual tokens the model answers from.

The image is processed and encoded exactly as :func:`medvlm.runtime.visual.build_visual_input`
does (slicing off: the overview's patch tokens through the projector; slicing on: slices and
overview encoded, reduced under the budget, laid out with separators), the prompt is spliced the
same way, and the answer logit margin ``logit(yes) - logit(no)`` at the first answer position is
explained with respect to the visual-token embeddings. Every part's span in the visual tokens is
recorded, so token relevance can be laid back on the film through the slicing geometry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from medvlm.budget import BudgetPolicy
from medvlm.grounding.maps import (
    DEFAULT_MAP_SIDE,
    GroundingError,
    PartSpan,
    TokenLayout,
    lay_back,
)
from medvlm.grounding.relevance import (
    Relevance,
    RelevanceMethod,
    gradient_x_input,
    occlusion_film_map,
)
from medvlm.processing import ImageProcessor, PartRef, ProcessedImage, ProcessorConfig
from medvlm.prompts.conversation import ConversationTemplate, splice_image_tokens
from medvlm.runtime.visual import encode_parts, layout_embeddings
from medvlm.token_reduction import reduce_visual_tokens

__all__ = ["LlavaGroundingInputs", "answer_token_ids", "llava_relevance", "visual_tokens"]


@dataclass(frozen=True)
class LlavaGroundingInputs:
    """What the runtime knows that grounding needs (no private attribute is read elsewhere)."""

    model: Any
    tokenizer: Any
    template: ConversationTemplate
    processor_config: ProcessorConfig
    slicing: bool
    token_budget: int
    policy: BudgetPolicy
    newline_id: int
    comma_id: int
    image_token_id: int
    device: torch.device
    dtype: torch.dtype


def answer_token_ids(tokenizer: Any, words: tuple[str, str] = ("yes", "no")) -> tuple[int, int]:
    """First token ids of the two answer words, as the model would start its answer."""
    ids = []
    for word in words:
        pieces = list(tokenizer(word, add_special_tokens=False).input_ids)
        if not pieces:
            raise GroundingError(f"the tokenizer encodes {word!r} to no token")
        ids.append(int(pieces[0]))
    if ids[0] == ids[1]:
        raise GroundingError(
            f"{words[0]!r} and {words[1]!r} start with the same token {ids[0]}: the answer margin "
            "would be zero"
        )
    return ids[0], ids[1]


def _overview_tokens(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """LLaVA's own image features (feature layer, CLS dropped, projector): ``[T, D]``."""
    tower = model.model.vision_tower
    layer = int(model.config.vision_feature_layer)
    hidden = tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states[layer]
    projected: torch.Tensor = model.model.multi_modal_projector(hidden[:, 1:])
    return projected[0]


def visual_tokens(
    inputs: LlavaGroundingInputs, image: NDArray[np.uint8]
) -> tuple[torch.Tensor, TokenLayout, ProcessedImage, dict[str, Any]]:
    """The visual-token embeddings of ``image`` (``[n, D]``), their layout and the processed image."""
    processed = ImageProcessor(inputs.processor_config)(image)
    patch = inputs.processor_config.patch_size
    model = inputs.model
    overview = processed.overview.to(device=inputs.device, dtype=inputs.dtype)
    details: dict[str, Any] = {"slicing": inputs.slicing}
    with torch.no_grad():
        if not inputs.slicing:
            embeds = _overview_tokens(model, overview)
            grid = (overview.shape[-2] // patch, overview.shape[-1] // patch)
            span = PartSpan("overview", 0, int(embeds.shape[0]), grid, kept_grid=grid)
            return embeds, TokenLayout((span,), int(embeds.shape[0])), processed, details
        plan = processed.plan
        slice_grid = plan.grid if plan is not None and processed.slices is not None else None
        need_attention = inputs.policy == "attention"
        parts = []
        if processed.slices is not None:
            slices = processed.slices.to(device=inputs.device, dtype=inputs.dtype)
            parts.extend(encode_parts(model, slices, role="slice", attention=need_attention))
        parts.extend(encode_parts(model, overview, role="overview", attention=need_attention))
        reduced = reduce_visual_tokens(
            parts, inputs.token_budget, inputs.policy, slice_grid=slice_grid
        )
        kept = [model.model.multi_modal_projector(part.features) for part in reduced.parts]
        embeds = layout_embeddings(
            kept,
            grid=slice_grid,
            embed=model.get_input_embeddings(),
            newline_id=inputs.newline_id,
            comma_id=inputs.comma_id,
        )
    spans: list[PartSpan] = []
    position = 0
    n_slices = len(reduced.parts) - 1
    for index, part in enumerate(reduced.parts):
        ref: PartRef = "overview" if part.role == "overview" else index
        indices = (
            None
            if part.kept_indices is None or part.grid is not None
            else tuple(int(i) for i in part.kept_indices.tolist())
        )
        spans.append(
            PartSpan(
                ref,
                position,
                part.n_kept,
                part.original_grid,
                kept_grid=part.grid if indices is None else None,
                kept_indices=indices,
            )
        )
        position += part.n_kept + (1 if index < n_slices else 0)  # separator after each slice
    details["budget"] = reduced.to_dict()
    return embeds, TokenLayout(tuple(spans), int(embeds.shape[0])), processed, details


def _prompt_scorer(
    inputs: LlavaGroundingInputs, instruction: str, n_visual: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``visual embeds [n, D] -> logit(yes) - logit(no)`` at the first answer position."""
    prompt = inputs.template.render(instruction, image=True)
    spliced = splice_image_tokens(
        prompt,
        lambda text: list(inputs.tokenizer(text).input_ids),
        bos_token_id=inputs.tokenizer.bos_token_id,
        image_token_id=inputs.image_token_id,
        n_image_tokens=n_visual,
    )
    input_ids = torch.tensor([spliced.input_ids], device=inputs.device)
    with torch.no_grad():
        text_embeds = inputs.model.get_input_embeddings()(input_ids)
    start = spliced.image_start
    yes_id, no_id = answer_token_ids(inputs.tokenizer)

    def score(visual: torch.Tensor) -> torch.Tensor:
        embeds = torch.cat(
            [
                text_embeds[:, :start],
                visual.to(text_embeds.dtype).unsqueeze(0),
                text_embeds[:, start + n_visual :],
            ],
            dim=1,
        )
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        out = inputs.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        logits = out.logits[0, -1].float()
        margin: torch.Tensor = logits[yes_id] - logits[no_id]
        return margin

    return score


def llava_relevance(
    inputs: LlavaGroundingInputs,
    image: NDArray[np.uint8],
    instruction: str,
    *,
    method: RelevanceMethod | str = RelevanceMethod.GRADIENT_X_INPUT,
    max_side: int = DEFAULT_MAP_SIDE,
    occlusion_grid: int = 8,
) -> Relevance:
    """The relevance map on the film of the model's "yes" to ``instruction`` about ``image``."""
    method = RelevanceMethod(method)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if method is RelevanceMethod.GRADIENT_X_INPUT:
        embeds, layout, processed, details = visual_tokens(inputs, image)
        timings["vision_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
        t1 = time.perf_counter()
        score = _prompt_scorer(inputs, instruction, layout.n_tokens)
        token_relevance, value = gradient_x_input(score, embeds)
        timings["forward_backward_ms"] = round((time.perf_counter() - t1) * 1000.0, 3)
        film_map = lay_back(layout.split(token_relevance), processed, max_side=max_side)
        details.update(
            visual_tokens=layout.n_tokens,
            parts=[
                {
                    "part": span.part,
                    "tokens": span.n_tokens,
                    "mass": float(cells.sum()),
                    "positive_mass": float(np.clip(cells, 0, None).sum()),
                }
                for span, cells in layout.split(token_relevance)
            ],
        )
    else:

        def score_film(film: NDArray[np.uint8]) -> float:
            embeds, layout, _, _ = visual_tokens(inputs, film)
            with torch.no_grad():
                return float(_prompt_scorer(inputs, instruction, layout.n_tokens)(embeds).item())

        film_map, value, details = occlusion_film_map(
            score_film, image, grid=occlusion_grid, max_side=max_side
        )
        details["slicing"] = inputs.slicing
    timings["relevance_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
    return Relevance(
        film_map=film_map, method=method, score=value, details=details, timings_ms=timings
    )
