"""A per-study visual-token budget, enforced by training-free reduction of encoder features.

LLaVA-Rad's encoder yields 1,369 patch tokens per 518-px image, so a sliced film (6 slices plus the
overview: about 9,400 tokens) overflows both the 2,048-token context the model was trained with and
a 16 GB V100. The budget caps the visual tokens of one study (slice and overview features plus the
layout separators); two policies bring the encoder output within it without training:

* ``pool``: adaptive average pooling of each part's ``h x w`` patch grid to a smaller grid, with one
  common scale for every part (the largest that fits), so the spatial layout is kept.
* ``attention``: in the spirit of HiRED (arXiv 2408.10945). Phase 1 splits the budget between the
  overview and the slices, and among the slices in proportion to each slice's share of the
  overview's CLS attention (the overview patches that fall inside the slice). Phase 2 keeps, in each
  part, the patch tokens with the highest CLS attention of that part, in their original order.

``none`` keeps every token and refuses to exceed the budget.

Default budget (:data:`DEFAULT_VISUAL_TOKEN_BUDGET` = 1,500), chosen so a 7B fp16 model runs at
batch 1 on a 16 GB V100 (see :func:`budget_arithmetic`):

* The context is 2,048 tokens (LLaVA-Rad's training context). Generation needs up to 256 new
  tokens and the text of the prompt (Vicuna system prompt, instruction, a reason for exam) gets a
  reserve of 292 tokens, leaving ``2,048 - 256 - 292 = 1,500`` visual tokens. A 2,500 x 3,000 film
  sliced 2 x 3 at 518 px (8,118 slice + 1,320 overview patches + 6 separators) is pooled into
  it; unsliced LLaVA-Rad (1,369 tokens) fits without reduction.
* Memory at the full context: weights 12.75 GiB (6.85 B parameters, fp16) + KV cache
  ``2,048 x 0.5 MiB = 1.0 GiB`` + about 0.75 GiB for the vision tower, projector, activations and
  allocator slack = 14.5 GiB, under the 15.78 GiB a 16 GB V100 exposes, with about 1.3 GiB spare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import torch
from torch.nn import functional

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
    "PartFeatures",
    "PartRole",
    "ReducedPart",
    "ReducedTokens",
    "budget_arithmetic",
    "choose_plan_within_budget",
    "cls_attention_from_weights",
    "estimate_memory_gib",
    "reduce_visual_tokens",
]

BudgetPolicy = Literal["none", "pool", "attention"]
PartRole = Literal["slice", "overview"]

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

_WEIGHTS_GIB = 12.75
_KV_MIB_PER_TOKEN = 0.5
_OVERHEAD_GIB = 0.75
_V100_16GB_USABLE_GIB = 15.78

_POLICIES: tuple[BudgetPolicy, ...] = ("none", "pool", "attention")


def estimate_memory_gib(
    context_tokens: int,
    *,
    weights_gib: float = _WEIGHTS_GIB,
    kv_mib_per_token: float = _KV_MIB_PER_TOKEN,
    overhead_gib: float = _OVERHEAD_GIB,
) -> float:
    """Peak GPU memory (GiB) of a 7B fp16 model at batch 1 with ``context_tokens`` in KV cache."""
    return weights_gib + context_tokens * kv_mib_per_token / 1024.0 + overhead_gib


def budget_arithmetic() -> dict[str, float]:
    """The numbers behind :data:`DEFAULT_VISUAL_TOKEN_BUDGET` (for docs, provenance and tests)."""
    peak = estimate_memory_gib(DEFAULT_CONTEXT_LENGTH)
    return {
        "context_tokens": float(DEFAULT_CONTEXT_LENGTH),
        "max_new_tokens": float(DEFAULT_MAX_NEW_TOKENS),
        "text_token_reserve": float(DEFAULT_TEXT_TOKEN_RESERVE),
        "visual_token_budget": float(DEFAULT_VISUAL_TOKEN_BUDGET),
        "weights_gib": _WEIGHTS_GIB,
        "kv_cache_gib": DEFAULT_CONTEXT_LENGTH * _KV_MIB_PER_TOKEN / 1024.0,
        "overhead_gib": _OVERHEAD_GIB,
        "peak_gib": peak,
        "v100_16gb_usable_gib": _V100_16GB_USABLE_GIB,
        "spare_gib": _V100_16GB_USABLE_GIB - peak,
    }


@dataclass(frozen=True)
class PartFeatures:
    """Encoder output of one encoded image (a slice or the overview), CLS token dropped.

    ``features`` is ``[T, D]`` in row-major patch order, ``grid`` is the patch grid ``(h, w)``
    (rows, cols) with ``h * w == T``, ``cls_attention`` is ``[T]``: the CLS token's attention to
    each patch (heads averaged), needed by the ``attention`` policy.
    """

    features: torch.Tensor
    grid: tuple[int, int]
    role: PartRole
    cls_attention: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.role not in ("slice", "overview"):
            raise BudgetError(f"part role must be 'slice' or 'overview', got {self.role!r}")
        if self.features.ndim != 2:
            raise BudgetError(
                f"part features must be [T, D], got shape {tuple(self.features.shape)}; "
                "drop the batch dimension and the CLS token first"
            )
        h, w = self.grid
        if h <= 0 or w <= 0 or h * w != self.features.shape[0]:
            raise BudgetError(
                f"part grid {self.grid} (h, w) does not match {self.features.shape[0]} tokens: "
                "pass the patch grid of this part as (rows, cols)"
            )
        if self.cls_attention is not None and tuple(self.cls_attention.shape) != (h * w,):
            raise BudgetError(
                f"cls_attention must be [T] = [{h * w}], got shape "
                f"{tuple(self.cls_attention.shape)}"
            )

    @property
    def n_tokens(self) -> int:
        """Patch tokens of this part."""
        return int(self.features.shape[0])


@dataclass(frozen=True)
class ReducedPart:
    """What one part kept: features in spatial order, and how they were chosen.

    ``kept_indices`` (ascending, into the part's original tokens) is set when tokens were selected
    (``none``, ``attention``); ``grid`` ``(h, w)`` is set when the part is still a full grid
    (``none``, ``pool``).
    """

    role: PartRole
    features: torch.Tensor
    original_tokens: int
    original_grid: tuple[int, int]
    kept_indices: torch.Tensor | None
    grid: tuple[int, int] | None

    @property
    def n_kept(self) -> int:
        """Tokens this part kept."""
        return int(self.features.shape[0])


@dataclass(frozen=True)
class ReducedTokens:
    """Visual features of one study after the budget: one :class:`ReducedPart` per input part."""

    parts: tuple[ReducedPart, ...]
    policy: BudgetPolicy
    budget: int
    separator_tokens: int
    allocation: tuple[float, ...] = field(default=())

    @property
    def features(self) -> tuple[torch.Tensor, ...]:
        """Kept features per part, ``[k_i, D]`` each, in spatial order."""
        return tuple(part.features for part in self.parts)

    @property
    def kept_indices(self) -> tuple[torch.Tensor | None, ...]:
        """Indices kept per part (``None`` for pooled parts)."""
        return tuple(part.kept_indices for part in self.parts)

    @property
    def kept_per_part(self) -> tuple[int, ...]:
        """Tokens kept per part."""
        return tuple(part.n_kept for part in self.parts)

    @property
    def tokens_before(self) -> int:
        """Feature tokens before reduction (separators not included)."""
        return sum(part.original_tokens for part in self.parts)

    @property
    def tokens_after(self) -> int:
        """Feature tokens after reduction (separators not included)."""
        return sum(self.kept_per_part)

    @property
    def visual_tokens(self) -> int:
        """Visual tokens the language model sees: kept features plus layout separators."""
        return self.tokens_after + self.separator_tokens

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record (provenance): policy, budget, tokens kept per part."""
        return {
            "policy": self.policy,
            "budget": self.budget,
            "separator_tokens": self.separator_tokens,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "visual_tokens": self.visual_tokens,
            "roles": [part.role for part in self.parts],
            "kept_per_part": list(self.kept_per_part),
            "original_grids": [list(part.original_grid) for part in self.parts],
            "grids": [None if part.grid is None else list(part.grid) for part in self.parts],
            "allocation": list(self.allocation),
        }


def cls_attention_from_weights(attentions: torch.Tensor, *, prefix_tokens: int = 1) -> torch.Tensor:
    """CLS-to-patch attention ``[T]`` from one layer's attention weights, heads averaged.

    ``attentions`` is ``[heads, N, N]`` or ``[1, heads, N, N]`` (as transformers returns with
    ``output_attentions=True``), with ``N = prefix_tokens + T`` and the CLS token first.
    """
    if attentions.ndim == 4:
        if attentions.shape[0] != 1:
            raise BudgetError(
                f"attention weights hold a batch of {attentions.shape[0]} images; pass one image"
            )
        attentions = attentions[0]
    if attentions.ndim != 3 or attentions.shape[1] != attentions.shape[2]:
        raise BudgetError(
            f"attention weights must be [heads, N, N], got shape {tuple(attentions.shape)}"
        )
    if attentions.shape[2] <= prefix_tokens:
        raise BudgetError(f"attention weights have no patch tokens after {prefix_tokens} prefix")
    return attentions[:, 0, prefix_tokens:].float().mean(dim=0)


def _check_inputs(
    parts: Sequence[PartFeatures], budget: int, policy: str, separator_tokens: int
) -> None:
    if policy not in _POLICIES:
        raise BudgetError(f"unknown budget policy {policy!r}: choose one of {list(_POLICIES)}")
    if not parts:
        raise BudgetError("no visual parts to reduce: pass at least the overview's features")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise BudgetError(f"visual-token budget must be a positive integer, got {budget!r}")
    overviews = sum(1 for part in parts if part.role == "overview")
    if overviews != 1:
        raise BudgetError(
            f"a study has exactly one overview part, got {overviews}: mark the global image "
            "role='overview' and every slice role='slice'"
        )
    dims = {int(part.features.shape[1]) for part in parts}
    if len(dims) != 1:
        raise BudgetError(f"all parts must have the same feature width, got {sorted(dims)}")
    if budget - separator_tokens < len(parts):
        raise BudgetError(
            f"visual-token budget {budget} leaves {budget - separator_tokens} feature tokens after "
            f"{separator_tokens} separators, fewer than one per part ({len(parts)} parts): raise "
            "the budget or use fewer slices"
        )


def _identity(part: PartFeatures) -> ReducedPart:
    return ReducedPart(
        role=part.role,
        features=part.features,
        original_tokens=part.n_tokens,
        original_grid=part.grid,
        kept_indices=torch.arange(part.n_tokens, device=part.features.device),
        grid=part.grid,
    )


def _pooled_grid(grid: tuple[int, int], scale: Fraction) -> tuple[int, int]:
    h, w = grid
    return (
        max(1, h * scale.numerator // scale.denominator),
        max(1, w * scale.numerator // scale.denominator),
    )


def _pool_scale(grids: Sequence[tuple[int, int]], budget: int) -> Fraction:
    """The largest common scale ``s <= 1`` whose floored grids hold at most ``budget`` tokens."""

    def total(scale: Fraction) -> int:
        return sum(a * b for a, b in (_pooled_grid(g, scale) for g in grids))

    # total() only changes where h*s or w*s crosses an integer, and never decreases as s grows:
    # binary-search those points for the largest that fits.
    candidates = sorted(
        {Fraction(k, side) for g in grids for side in g for k in range(1, side + 1)}
    )
    lo, hi = 0, len(candidates)  # candidates[:lo] fit; candidates[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        if total(candidates[mid]) <= budget:
            lo = mid + 1
        else:
            hi = mid
    return candidates[lo - 1] if lo > 0 else Fraction(0)


def _pool_part(part: PartFeatures, grid: tuple[int, int]) -> ReducedPart:
    h, w = part.grid
    if grid == part.grid:
        return ReducedPart(part.role, part.features, part.n_tokens, part.grid, None, part.grid)
    dim = part.features.shape[1]
    x = part.features.float().reshape(h, w, dim).permute(2, 0, 1).unsqueeze(0)
    pooled = (
        functional.adaptive_avg_pool2d(x, grid)[0].permute(1, 2, 0).reshape(grid[0] * grid[1], dim)
    )
    return ReducedPart(
        role=part.role,
        features=pooled.to(part.features.dtype),
        original_tokens=part.n_tokens,
        original_grid=part.grid,
        kept_indices=None,
        grid=grid,
    )


def _apportion(total: int, weights: Sequence[float], caps: Sequence[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights``, each in ``[1, cap]``.

    Proportional floors first, then single tokens by largest remainder (ties to the lower index);
    what a capped share cannot take goes to the others.
    Requires ``len(weights) <= total <= sum(caps)``.
    """
    n = len(weights)
    alloc = [1] * n
    left = total - n
    open_ = [i for i in range(n) if caps[i] > 1]
    while left > 0 and open_:
        weight_sum = sum(max(weights[i], 0.0) for i in open_)
        shares = {
            i: (left * max(weights[i], 0.0) / weight_sum if weight_sum > 0 else left / len(open_))
            for i in open_
        }
        given = 0
        for i in open_:
            take = min(math.floor(shares[i]), caps[i] - alloc[i])
            alloc[i] += take
            given += take
        left -= given
        open_ = [i for i in open_ if alloc[i] < caps[i]]
        if left > 0 and open_ and given == 0:
            # Hand out single tokens by largest remainder (stable order) to finish.
            order = sorted(open_, key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
            for i in order:
                if left == 0:
                    break
                alloc[i] += 1
                left -= 1
            open_ = [i for i in open_ if alloc[i] < caps[i]]
    return alloc


def _slice_attention_shares(
    overview_attention: torch.Tensor,
    overview_grid: tuple[int, int],
    slice_grid: tuple[int, int],
) -> list[float]:
    """Each slice's share of the overview's CLS attention (patch centres assigned to slices)."""
    cols, rows = slice_grid
    h, w = overview_grid
    attention = overview_attention.detach().float().cpu().clamp(min=0).reshape(h, w)
    row_of = torch.tensor([(2 * i + 1) * rows // (2 * h) for i in range(h)])
    col_of = torch.tensor([(2 * j + 1) * cols // (2 * w) for j in range(w)])
    cell = (row_of[:, None] * cols + col_of[None, :]).reshape(-1)
    sums = torch.zeros(cols * rows, dtype=torch.float64)
    sums.index_add_(0, cell, attention.reshape(-1).double())
    total = float(sums.sum())
    if total <= 0.0:
        return [1.0 / (cols * rows)] * (cols * rows)
    return [float(x) / total for x in sums]


def _top_k_in_order(part: PartFeatures, k: int) -> ReducedPart:
    assert part.cls_attention is not None
    order = torch.argsort(part.cls_attention.detach().float(), descending=True, stable=True)
    kept = torch.sort(order[:k]).values.to(part.features.device)
    return ReducedPart(
        role=part.role,
        features=part.features[kept],
        original_tokens=part.n_tokens,
        original_grid=part.grid,
        kept_indices=kept,
        grid=part.grid if k == part.n_tokens else None,
    )


def reduce_visual_tokens(
    parts: Sequence[PartFeatures],
    budget: int,
    policy: BudgetPolicy,
    *,
    slice_grid: tuple[int, int] | None = None,
    separator_tokens: int | None = None,
    overview_share: float | None = None,
    overview_allocation_attention: torch.Tensor | None = None,
) -> ReducedTokens:
    """Bring one study's visual features within ``budget`` tokens with a training-free policy.

    Args:
        parts: the encoded images of the study, slices row-major and exactly one overview.
        budget: visual tokens allowed for the study: kept features plus layout separators.
        policy: ``none`` (keep all; :class:`BudgetError` if over budget), ``pool`` or ``attention``.
        slice_grid: ``(cols, rows)`` of the slices (``SlicePlan.grid``); needed by ``attention``
            when there are slices, to map overview patches to slices.
        separator_tokens: layout tokens the runtime adds; default one per slice (spatial schema).
        overview_share: ``attention`` only: the overview's fraction of the feature budget; default
            its natural fraction of the tokens.
        overview_allocation_attention: ``attention`` only: the overview's CLS attention used for the
            phase-1 split (HiRED takes it from an early layer); default the overview's
            ``cls_attention``.

    Returns:
        The kept features per part, in spatial order, with what each part kept.
    """
    n_slices = sum(1 for part in parts if part.role == "slice")
    separators = n_slices if separator_tokens is None else separator_tokens
    if separators < 0:
        raise BudgetError(f"separator_tokens must be >= 0, got {separators}")
    _check_inputs(parts, budget, policy, separators)
    feature_budget = budget - separators
    total = sum(part.n_tokens for part in parts)

    if policy == "none" or total <= feature_budget:
        if total > feature_budget:
            raise BudgetError(
                f"policy 'none' keeps all {total} feature tokens (+{separators} separators) but "
                f"the visual-token budget is {budget}: use policy 'pool' or 'attention', fewer "
                "slices, or a larger budget"
            )
        return ReducedTokens(
            tuple(_identity(part) for part in parts), policy, budget, separators, ()
        )

    if policy == "pool":
        scale = _pool_scale([part.grid for part in parts], feature_budget)
        reduced = tuple(_pool_part(part, _pooled_grid(part.grid, scale)) for part in parts)
        return ReducedTokens(reduced, policy, budget, separators, (float(scale),))

    missing = [i for i, part in enumerate(parts) if part.cls_attention is None]
    if missing:
        raise BudgetError(
            f"policy 'attention' needs cls_attention for every part; parts {missing} have none: "
            "run the encoder with attention output or use policy 'pool'"
        )
    overview_index = next(i for i, part in enumerate(parts) if part.role == "overview")
    overview = parts[overview_index]
    slice_indices = [i for i, part in enumerate(parts) if part.role == "slice"]
    caps = [parts[i].n_tokens for i in slice_indices]

    if not slice_indices:
        budgets = {overview_index: feature_budget}
        allocation: tuple[float, ...] = (1.0,)
    else:
        if slice_grid is None or slice_grid[0] * slice_grid[1] != len(slice_indices):
            raise BudgetError(
                f"policy 'attention' needs slice_grid (cols, rows) matching the "
                f"{len(slice_indices)} slices, got {slice_grid!r}: pass SlicePlan.grid"
            )
        if overview_share is None:
            share = overview.n_tokens / total
        elif 0.0 < overview_share < 1.0:
            share = overview_share
        else:
            raise BudgetError(f"overview_share must be in (0, 1), got {overview_share}")
        # Every slice keeps at least one token, the overview at least one.
        low = max(1, feature_budget - sum(caps))
        high = min(overview.n_tokens, feature_budget - len(slice_indices))
        overview_budget = min(max(round(feature_budget * share), low), high)
        phase1 = (
            overview_allocation_attention
            if overview_allocation_attention is not None
            else overview.cls_attention
        )
        assert phase1 is not None
        if tuple(phase1.shape) != (overview.n_tokens,):
            raise BudgetError(
                f"overview_allocation_attention must be [{overview.n_tokens}], got shape "
                f"{tuple(phase1.shape)}"
            )
        shares = _slice_attention_shares(phase1, overview.grid, slice_grid)
        slice_budgets = _apportion(feature_budget - overview_budget, shares, caps)
        budgets = dict(zip(slice_indices, slice_budgets, strict=True))
        budgets[overview_index] = overview_budget
        allocation = tuple(shares)
    reduced = tuple(_top_k_in_order(part, budgets[i]) for i, part in enumerate(parts))
    return ReducedTokens(reduced, policy, budget, separators, allocation)


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
