"""Tests of the visual-token budget and the plan chosen to fit it (medvlm.budget)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medvlm.budget import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEXT_TOKEN_RESERVE,
    DEFAULT_VISUAL_TOKEN_BUDGET,
    choose_plan_within_budget,
)
from medvlm.errors import BudgetError
from medvlm.token_reduction import reduce_visual_tokens
from tests.medvlm.test_token_reduction import LLAVA_RAD, _parts_for

REPO = Path(__file__).resolve().parents[2]


def test_default_budget_is_the_context_left_after_generation_and_text() -> None:
    assert DEFAULT_VISUAL_TOKEN_BUDGET == 1500
    assert DEFAULT_VISUAL_TOKEN_BUDGET == (
        DEFAULT_CONTEXT_LENGTH - DEFAULT_MAX_NEW_TOKENS - DEFAULT_TEXT_TOKEN_RESERVE
    )
    # docs/model.md derives the same number (and the memory it leaves on a 16 GB V100).
    docs = (REPO / "docs" / "model.md").read_text(encoding="utf-8")
    assert "**visual-token budget** = 2,048 - 256 - 292 | **1,500**" in docs


def test_plan_choice_imports_without_torch() -> None:
    # Settings and the CLI choose plans and name policies; they must not pay for torch.
    code = (
        "import sys; sys.modules['torch'] = None; "
        "from medvlm.budget import choose_plan_within_budget; "
        "print(choose_plan_within_budget(2500, 3000, native_size=518, patch_size=14, "
        "max_slices=7).plan.grid)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "(2, 3)"


def test_2500x3000_film_fits_the_default_budget_with_both_policies() -> None:
    choice = choose_plan_within_budget(2500, 3000, **LLAVA_RAD)
    assert choice.plan.grid == (2, 3)
    assert not choice.reduced_slices
    assert choice.needs_reduction
    assert choice.plan.visual_tokens == 9444
    assert choice.min_visual_tokens <= DEFAULT_VISUAL_TOKEN_BUDGET
    parts = _parts_for(choice.plan)
    for policy in ("pool", "attention"):
        reduced = reduce_visual_tokens(
            parts, DEFAULT_VISUAL_TOKEN_BUDGET, policy, slice_grid=choice.plan.grid
        )
        assert reduced.visual_tokens <= DEFAULT_VISUAL_TOKEN_BUDGET
        assert reduced.separator_tokens == 6
        assert reduced.policy == policy
        assert len(reduced.kept_per_part) == 7
        assert all(k >= 1 for k in reduced.kept_per_part)


def test_choose_fewer_slices_when_pooling_cannot_fit() -> None:
    # At budget 500, 6 slices cannot fit even pooled by 3 per side (1,007 tokens).
    choice = choose_plan_within_budget(2500, 3000, budget=500, **LLAVA_RAD)
    assert choice.reduced_slices
    assert choice.requested.n_slices == 6
    assert choice.plan.n_slices < 6
    assert choice.min_visual_tokens <= 500
    assert "chose" in choice.reason
    assert choice.to_dict()["reduced_slices"] is True
    # Pooling the chosen plan then really fits.
    reduced = reduce_visual_tokens(
        _parts_for(choice.plan), 500, "pool", slice_grid=choice.plan.grid
    )
    assert reduced.visual_tokens <= 500


def test_unsliced_fallback_and_too_small_budget() -> None:
    choice = choose_plan_within_budget(2500, 3000, budget=200, **LLAVA_RAD)
    assert choice.plan.grid is None
    assert choice.plan.visual_tokens == choice.plan.patches_overview
    with pytest.raises(BudgetError, match="budget 50 is too small"):
        choose_plan_within_budget(2500, 3000, budget=50, **LLAVA_RAD)
