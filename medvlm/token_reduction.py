"""Training-free reduction of one study's encoder features to the visual-token budget (torch).

Two policies bring the encoder output within the budget (:mod:`medvlm.budget`) without training:

* ``pool``: adaptive average pooling of each part's ``h x w`` patch grid to a smaller grid, with one
  common scale for every part (the largest that fits), so the spatial layout is kept.
* ``attention``: in the spirit of HiRED (arXiv 2408.10945). Phase 1 splits the budget between the
  overview and the slices, and among the slices in proportion to each slice's share of the
  overview's CLS attention (the overview patches that fall inside the slice). Phase 2 keeps, in each
  part, the patch tokens with the highest CLS attention of that part, in their original order.

``none`` keeps every token and refuses to exceed the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, get_args

import torch
from torch.nn import functional

from medvlm.budget import BudgetPolicy
from medvlm.errors import BudgetError

__all__ = [
    "PartFeatures",
    "PartRole",
    "ReducedPart",
    "ReducedTokens",
    "cls_attention_from_weights",
    "reduce_visual_tokens",
]

PartRole = Literal["slice", "overview"]

_POLICIES: tuple[BudgetPolicy, ...] = get_args(BudgetPolicy)


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
