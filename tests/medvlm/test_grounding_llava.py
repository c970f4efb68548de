"""Relevance maps end to end on the tiny LLaVA-Rad checkpoint through the real runtime: the
explained score is the model's own answer logit margin, the layout matches the visual tokens the
model answers from (slicing off, on with ``pool`` and with ``attention``), maps are deterministic,
boxes lie inside the film (and inside the part the model saw), portrait and landscape alike. The
tiny model's maps are noise: nothing here judges where they point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medvlm.grounding import RelevanceMethod, map_to_boxes
from medvlm.grounding.llava import answer_token_ids
from medvlm.grounding.maps import map_shape
from medvlm.processing import ImageProcessor, ProcessorConfig
from medvlm.prompts.checking import render_verify
from medvlm.prompts.conversation import VICUNA_V1, splice_image_tokens
from medvlm.prompts.knowledge import load_knowledge_base
from medvlm.runtime import TransformersRuntime
from tests.medvlm.test_runtime_helpers import offline_guard, tiny_checkpoint, tiny_runtime

__all__ = ["offline_guard", "tiny_checkpoint", "tiny_runtime"]

QUESTION = render_verify(load_knowledge_base()["pleural_effusion"])


def _film(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width), dtype=np.uint8)


@pytest.fixture(scope="module")
def sliced_runtimes(tiny_checkpoint: Path) -> dict[str, Any]:
    return {
        policy: TransformersRuntime(
            tiny_checkpoint, device="cpu", slicing=True, token_budget=600, budget_policy=policy
        )
        for policy in ("pool", "attention")
    }


def test_the_explained_score_is_the_models_own_answer_margin(tiny_runtime: Any) -> None:
    image = _film(520, 640, seed=3)
    relevance = tiny_runtime.relevance(image, QUESTION)
    # the model's own forward pass (pixel_values through LLaVA's image-token replacement)
    pixels = ImageProcessor(ProcessorConfig())(image).overview
    tokenizer = tiny_runtime.tokenizer
    spliced = splice_image_tokens(
        VICUNA_V1.render(QUESTION, image=True),
        lambda text: list(tokenizer(text).input_ids),
        bos_token_id=tokenizer.bos_token_id,
        image_token_id=tiny_runtime.model.config.image_token_id,
        n_image_tokens=37 * 37,
    )
    with torch.no_grad():
        logits = tiny_runtime.model(
            input_ids=torch.tensor([spliced.input_ids]), pixel_values=pixels
        ).logits[0, -1]
    yes, no = answer_token_ids(tokenizer)
    assert relevance.score == pytest.approx(float(logits[yes] - logits[no]), abs=1e-4)
    assert relevance.method is RelevanceMethod.GRADIENT_X_INPUT
    assert relevance.details["visual_tokens"] == 37 * 37


def test_maps_are_deterministic_and_boxes_lie_in_the_part_the_model_saw(tiny_runtime: Any) -> None:
    image = _film(600, 900, seed=1)  # portrait: the centre crop keeps rows 150..750
    first = tiny_runtime.relevance(image, QUESTION)
    second = tiny_runtime.relevance(image.copy(), QUESTION)
    assert np.array_equal(first.film_map.values, second.film_map.values)
    assert first.film_map.values.shape == map_shape((600, 900))
    assert first.film_map.film_size == (600, 900)
    boxes, stats = map_to_boxes(first.film_map, label="pleural effusion")
    assert boxes and stats["regions"] == len(boxes)
    for box in boxes:
        x0, y0, x1, y1 = box.box
        assert 0 <= x0 < x1 <= 600 and 150 - 5 <= y0 < y1 <= 750 + 5
    rows = first.film_map.values.shape[0]
    assert not first.film_map.values[: int(rows * 150 / 900) - 1].any()  # cut by the crop


@pytest.mark.parametrize(
    ("policy", "width", "height"), [("pool", 900, 1200), ("attention", 1200, 900)]
)
def test_sliced_layout_matches_the_visual_tokens_and_covers_the_film(
    sliced_runtimes: dict[str, Any], policy: str, width: int, height: int
) -> None:
    runtime = sliced_runtimes[policy]
    image = _film(width, height, seed=2)
    relevance = runtime.relevance(image, QUESTION)
    generated = runtime.generate(image, QUESTION, max_new_tokens=1)
    assert relevance.details["visual_tokens"] == generated.visual_tokens
    parts = relevance.details["parts"]
    assert [p["part"] for p in parts][-1] == "overview" and len(parts) >= 3
    n_slices = len(parts) - 1
    assert sum(p["tokens"] for p in parts) + n_slices == generated.visual_tokens
    assert relevance.details["budget"]["policy"] == policy
    values = relevance.film_map.values
    assert values.shape == map_shape((width, height))
    # every slice and the overview cover the whole film: no map pixel is left unseen
    if policy == "pool":
        assert np.count_nonzero(values) == values.size
    boxes, _ = map_to_boxes(relevance.film_map, label="pleural effusion")
    assert boxes
    for box in boxes:
        x0, y0, x1, y1 = box.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_occlusion_through_the_runtime_needs_one_pass_per_patch(tiny_runtime: Any) -> None:
    image = _film(300, 360, seed=4)
    relevance = tiny_runtime.relevance(image, QUESTION, method="occlusion")
    assert relevance.method is RelevanceMethod.OCCLUSION
    assert relevance.details["forward_passes"] == 65
    assert relevance.film_map.values.shape == map_shape((300, 360))
    assert np.isfinite(relevance.film_map.values).all()
    baseline = tiny_runtime.relevance(image, QUESTION)
    assert relevance.score == pytest.approx(baseline.score, abs=1e-4)  # the same explained score
