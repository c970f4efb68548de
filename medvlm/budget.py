"""The per-study visual-token budget and the slicing plan chosen to fit it (no torch needed).

LLaVA-Rad's encoder yields 1,369 patch tokens per 518-px image, so a sliced film (6 slices plus the
overview: about 9,400 tokens) overflows the 2,048-token context the model was trained with. The
budget caps the visual tokens of one study (slice and overview features plus the layout separators).
This module holds the budget's numbers, the names of the reduction policies, and
:func:`choose_plan_within_budget`, which picks the slicing plan whose tokens the reduction can bring
within the budget; the reduction itself (torch) is :mod:`medvlm.token_reduction`.

The default (:data:`DEFAULT_VISUAL_TOKEN_BUDGET` = 2,048 - 256 - 292 = 1,500) and the memory it
leaves on a 16 GB V100 are derived in docs/model.md, section 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medvlm.errors import BudgetError
from medvlm.slicing import SlicePlan, plan_slices

__all__ = [
    "DEFAULT_CONTEXT_LENGTH",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_MAX_POOL_STRIDE",
    "DEFAULT_TEXT_TOKEN_RESERVE",
    "DEFAULT_VISUAL_TOKEN_BUDGET",
    "BudgetPolicy",
    "BudgetedPlan",
    "choose_plan_within_budget",
]

BudgetPolicy = Literal["none", "pool", "attention"]
"""How the visual tokens are brought within the budget (:func:`medvlm.token_reduction.reduce_visual_tokens`)."""

DEFAULT_CONTEXT_LENGTH = 2048
"""LLaVA-Rad's training context (tokens)."""
DEFAULT_MAX_NEW_TOKENS = 256
"""The reference's generation length (tokens)."""
DEFAULT_TEXT_TOKEN_RESERVE = 292
"""Reserve for the prompt's text: system prompt, instruction and a reason for exam (tokens)."""
DEFAULT_VISUAL_TOKEN_BUDGET = (
    DEFAULT_CONTEXT_LENGTH - DEFAULT_MAX_NEW_TOKENS - DEFAULT_TEXT_TOKEN_RESERVE
)
"""Visual tokens per study (features plus layout separators): 2,048 - 256 - 292 = 1,500."""
DEFAULT_MAX_POOL_STRIDE = 3
"""The most a pooled grid side may shrink (3: a 37 x 37 grid pools to no less than 12 x 12)."""


@dataclass(frozen=True)
class BudgetedPlan:
    """A slicing plan whose visual tokens can be brought within the budget, and why it was chosen.

    ``plan`` is the plan to use; ``requested`` the plan at the configured ``max_slices``.
    ``min_visual_tokens`` is the fewest visual tokens ``plan`` reaches by pooling each side by at
    most ``max_pool_stride``; ``needs_reduction`` says whether its unreduced tokens exceed the
    budget (the runtime must then apply a policy).
    """

    plan: SlicePlan
    requested: SlicePlan
    budget: int
    max_pool_stride: int
    min_visual_tokens: int
    reason: str

    @property
    def reduced_slices(self) -> bool:
        """Whether fewer slices than requested were chosen to meet the budget."""
        return self.plan.n_slices != self.requested.n_slices

    @property
    def needs_reduction(self) -> bool:
        """Whether the chosen plan's visual tokens exceed the budget before reduction."""
        return self.plan.visual_tokens > self.budget

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record of the choice."""
        return {
            "plan": self.plan.to_dict(),
            "requested_grid": None if self.requested.grid is None else list(self.requested.grid),
            "requested_n_slices": self.requested.n_slices,
            "requested_visual_tokens": self.requested.visual_tokens,
            "budget": self.budget,
            "max_pool_stride": self.max_pool_stride,
            "min_visual_tokens": self.min_visual_tokens,
            "reduced_slices": self.reduced_slices,
            "needs_reduction": self.needs_reduction,
            "reason": self.reason,
        }


def _min_tokens(plan: SlicePlan, stride: int) -> int:
    def part_min(size: tuple[int, int]) -> int:
        if plan.tokens_per_image is not None:
            return max(1, plan.tokens_per_image // (stride * stride))
        cols, rows = size[0] // plan.patch_size, size[1] // plan.patch_size
        return max(1, rows // stride) * max(1, cols // stride)

    total = part_min(plan.overview_size)
    if plan.slice_size is not None:
        total += plan.n_slices * part_min(plan.slice_size)
    return total + plan.separator_tokens


def choose_plan_within_budget(
    width: int,
    height: int,
    *,
    native_size: int,
    patch_size: int,
    max_slices: int,
    budget: int = DEFAULT_VISUAL_TOKEN_BUDGET,
    max_pool_stride: int = DEFAULT_MAX_POOL_STRIDE,
    max_patches_per_image: int | None = None,
    max_long_edge: int | None = None,
    tokens_per_image: int | None = None,
) -> BudgetedPlan:
    """The plan with the most slices (up to ``max_slices``) that pooling can fit in ``budget``.

    Tries ``max_slices``, then fewer, until pooling each part's grid by at most ``max_pool_stride``
    per side fits the budget; an unsliced plan is the last resort. The choice is recorded.

    Raises:
        BudgetError: not even the unsliced image fits (budget too small for the encoder).
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise BudgetError(f"visual-token budget must be a positive integer, got {budget!r}")
    if isinstance(max_pool_stride, bool) or not isinstance(max_pool_stride, int):
        raise BudgetError(f"max_pool_stride must be an integer >= 1, got {max_pool_stride!r}")
    if max_pool_stride < 1:
        raise BudgetError(f"max_pool_stride must be an integer >= 1, got {max_pool_stride}")

    def plan_for(m: int) -> SlicePlan:
        return plan_slices(
            width,
            height,
            native_size=native_size,
            patch_size=patch_size,
            max_slices=m,
            max_patches_per_image=max_patches_per_image,
            max_long_edge=max_long_edge,
            tokens_per_image=tokens_per_image,
        )

    requested = plan_for(max_slices)
    for m in range(max_slices, 0, -1):
        plan = requested if m == max_slices else plan_for(m)
        if m < max_slices and plan.n_slices == requested.n_slices and plan.grid == requested.grid:
            continue
        min_tokens = _min_tokens(plan, max_pool_stride)
        if min_tokens > budget:
            continue
        if plan.visual_tokens <= budget:
            how = "fits without reduction"
        else:
            how = f"needs reduction from {plan.visual_tokens} (pooling reaches {min_tokens})"
        if plan is requested:
            reason = f"requested plan ({requested.n_slices} slices) {how}"
        else:
            reason = (
                f"requested {requested.n_slices} slices need at least "
                f"{_min_tokens(requested, max_pool_stride)} visual tokens with pooling stride "
                f"{max_pool_stride}, over the budget {budget}; chose {plan.n_slices} slices, "
                f"which {how}"
            )
        return BudgetedPlan(plan, requested, budget, max_pool_stride, min_tokens, reason)
    unsliced = plan_for(1)
    raise BudgetError(
        f"visual-token budget {budget} is too small: even the unsliced image needs at least "
        f"{_min_tokens(unsliced, max_pool_stride)} tokens with pooling stride {max_pool_stride}; "
        "raise the budget or max_pool_stride"
    )
