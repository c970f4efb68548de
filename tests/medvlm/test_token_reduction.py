"""Tests of the training-free reduction of encoder features to the budget (medvlm.token_reduction)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medvlm.budget import DEFAULT_VISUAL_TOKEN_BUDGET, choose_plan_within_budget
from medvlm.errors import BudgetError, MedVLMError
from medvlm.slicing import SlicePlan
from medvlm.token_reduction import PartFeatures, cls_attention_from_weights, reduce_visual_tokens

LLAVA_RAD = {"native_size": 518, "patch_size": 14, "max_slices": 7}


def _parts_for(plan: SlicePlan, dim: int = 16, seed: int = 0) -> list[PartFeatures]:
    """Random features and CLS attention shaped like the encoder output for ``plan``."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[PartFeatures] = []

    def part(size: tuple[int, int], role: str) -> PartFeatures:
        cols, rows = size[0] // plan.patch_size, size[1] // plan.patch_size
        t = rows * cols
        attn = torch.rand(t, generator=gen).softmax(0)
        return PartFeatures(torch.randn(t, dim, generator=gen), (rows, cols), role, attn)  # type: ignore[arg-type]

    if plan.slice_size is not None:
        parts.extend(part(plan.slice_size, "slice") for _ in range(plan.n_slices))
    parts.append(part(plan.overview_size, "overview"))
    return parts


def test_pool_shapes_and_values() -> None:
    # One overview 4 x 6 grid whose features are the token index: pooling 2x2 averages blocks.
    h, w = 4, 6
    feats = torch.arange(h * w, dtype=torch.float32).reshape(h * w, 1).repeat(1, 3)
    part = PartFeatures(feats, (h, w), "overview")
    reduced = reduce_visual_tokens([part], 6, "pool")
    assert reduced.parts[0].grid == (2, 3)
    assert reduced.kept_per_part == (6,)
    assert reduced.kept_indices == (None,)
    out = reduced.features[0]
    assert out.shape == (6, 3)
    # Block (0, 0) holds tokens 0, 1, 6, 7 -> mean 3.5; block (1, 2) holds 16, 17, 22, 23 -> 19.5.
    assert out[0, 0].item() == pytest.approx(3.5)
    assert out[5, 0].item() == pytest.approx(19.5)


def test_pool_uses_one_scale_for_all_parts_and_respects_budget() -> None:
    parts = [
        PartFeatures(torch.randn(37 * 37, 8), (37, 37), "slice"),
        PartFeatures(torch.randn(37 * 37, 8), (37, 37), "slice"),
        PartFeatures(torch.randn(20 * 30, 8), (20, 30), "overview"),
    ]
    for budget in (10, 100, 500, 1000, 2000):
        reduced = reduce_visual_tokens(parts, budget, "pool")
        assert reduced.visual_tokens <= budget
        assert reduced.parts[0].grid == reduced.parts[1].grid
        for part in reduced.parts:
            assert part.grid is not None
            assert part.features.shape == (part.grid[0] * part.grid[1], 8)


def test_pool_keeps_dtype() -> None:
    part = PartFeatures(torch.randn(100, 4).half(), (10, 10), "overview")
    reduced = reduce_visual_tokens([part], 25, "pool")
    assert reduced.features[0].dtype == torch.float16
    assert reduced.parts[0].grid == (5, 5)


def test_within_budget_is_identity_for_every_policy() -> None:
    feats = torch.randn(1369, 8)
    part = PartFeatures(feats, (37, 37), "overview", torch.rand(1369))
    for policy in ("none", "pool", "attention"):
        reduced = reduce_visual_tokens([part], DEFAULT_VISUAL_TOKEN_BUDGET, policy)
        assert reduced.kept_per_part == (1369,)
        assert torch.equal(reduced.features[0], feats)


def test_none_policy_refuses_to_exceed_the_budget() -> None:
    part = PartFeatures(torch.randn(100, 4), (10, 10), "overview")
    with pytest.raises(BudgetError, match="policy 'none' keeps all 100 feature tokens"):
        reduce_visual_tokens([part], 50, "none")


def test_attention_keeps_highest_attention_tokens_in_order() -> None:
    t = 16
    feats = torch.arange(t, dtype=torch.float32).reshape(t, 1)
    attention = torch.zeros(t)
    top = [13, 2, 7, 9]
    for rank, index in enumerate(top):
        attention[index] = 1.0 - 0.1 * rank
    part = PartFeatures(feats, (4, 4), "overview", attention)
    reduced = reduce_visual_tokens([part], 3, "attention")
    kept = reduced.kept_indices[0]
    assert kept is not None
    assert kept.tolist() == [2, 7, 13]  # top three, in spatial order
    assert reduced.features[0][:, 0].tolist() == [2.0, 7.0, 13.0]


def test_attention_phase1_follows_the_overview_attention() -> None:
    # 2 x 1 slices (cols, rows); the overview's attention lies on the right half only.
    slice_grid = (2, 1)
    overview_attention = torch.zeros(4, 4)
    overview_attention[:, 2:] = 1.0
    parts = [
        PartFeatures(torch.randn(64, 4), (8, 8), "slice", torch.rand(64)),
        PartFeatures(torch.randn(64, 4), (8, 8), "slice", torch.rand(64)),
        PartFeatures(torch.randn(16, 4), (4, 4), "overview", overview_attention.reshape(-1)),
    ]
    reduced = reduce_visual_tokens(parts, 42, "attention", slice_grid=slice_grid)
    assert reduced.allocation == (0.0, 1.0)
    left, right, overview = reduced.kept_per_part
    assert left == 1  # every part keeps at least one token
    assert overview == round(40 * 16 / 144)
    assert left + right + overview == 40  # 42 minus 2 separators
    assert reduced.visual_tokens == 42


def test_attention_allocation_is_proportional_and_capped() -> None:
    slice_grid = (2, 2)
    overview_attention = torch.tensor(
        [[3.0, 3.0, 1.0, 1.0], [3.0, 3.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    parts = [PartFeatures(torch.randn(25, 4), (5, 5), "slice", torch.rand(25)) for _ in range(4)]
    parts.append(PartFeatures(torch.randn(16, 4), (4, 4), "overview", overview_attention.flatten()))
    reduced = reduce_visual_tokens(
        parts, 4 + 4 + 40, "attention", slice_grid=slice_grid, overview_share=0.1
    )
    assert reduced.allocation == (0.75, 0.25, 0.0, 0.0)
    s0, s1, s2, s3, overview = reduced.kept_per_part
    assert overview == 4
    assert s0 == 25  # capped at the slice's tokens; the rest goes to the others
    assert s0 + s1 + s2 + s3 + overview == 44
    assert s2 >= 1 and s3 >= 1


def test_attention_needs_attention_and_grid() -> None:
    parts = [
        PartFeatures(torch.randn(4, 2), (2, 2), "slice", torch.rand(4)),
        PartFeatures(torch.randn(4, 2), (2, 2), "slice", torch.rand(4)),
        PartFeatures(torch.randn(4, 2), (2, 2), "overview"),
    ]
    with pytest.raises(BudgetError, match=r"needs cls_attention for every part; parts \[2\]"):
        reduce_visual_tokens(parts, 8, "attention", slice_grid=(2, 1))
    parts[2] = PartFeatures(torch.randn(4, 2), (2, 2), "overview", torch.rand(4))
    with pytest.raises(BudgetError, match="needs slice_grid"):
        reduce_visual_tokens(parts, 8, "attention")


def test_reduction_is_deterministic() -> None:
    choice = choose_plan_within_budget(2500, 3000, **LLAVA_RAD)
    for policy in ("pool", "attention"):
        a = reduce_visual_tokens(_parts_for(choice.plan), 1500, policy, slice_grid=(2, 3))
        b = reduce_visual_tokens(_parts_for(choice.plan), 1500, policy, slice_grid=(2, 3))
        assert a.to_dict() == b.to_dict()
        for x, y in zip(a.features, b.features, strict=True):
            assert torch.equal(x, y)


def test_ties_in_attention_are_broken_by_position() -> None:
    part = PartFeatures(torch.randn(9, 2), (3, 3), "overview", torch.ones(9))
    kept = reduce_visual_tokens([part], 4, "attention").kept_indices[0]
    assert kept is not None
    assert kept.tolist() == [0, 1, 2, 3]


def test_to_dict_is_json() -> None:
    choice = choose_plan_within_budget(2500, 3000, **LLAVA_RAD)
    reduced = reduce_visual_tokens(_parts_for(choice.plan), 1500, "pool")
    data = reduced.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["policy"] == "pool"
    assert data["kept_per_part"] == list(reduced.kept_per_part)
    assert json.loads(json.dumps(choice.to_dict()))["budget"] == 1500


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(BudgetError, match=r"grid \(3, 3\) \(h, w\) does not match 4 tokens"):
        PartFeatures(torch.randn(4, 2), (3, 3), "overview")
    with pytest.raises(BudgetError, match="must be \\[T, D\\]"):
        PartFeatures(torch.randn(1, 4, 2), (2, 2), "overview")
    part = PartFeatures(torch.randn(4, 2), (2, 2), "overview")
    with pytest.raises(BudgetError, match="unknown budget policy 'max'"):
        reduce_visual_tokens([part], 4, "max")  # type: ignore[arg-type]
    with pytest.raises(BudgetError, match="exactly one overview part, got 0"):
        reduce_visual_tokens([PartFeatures(torch.randn(4, 2), (2, 2), "slice")], 4, "pool")
    with pytest.raises(BudgetError, match="fewer than one per part"):
        reduce_visual_tokens([part, PartFeatures(torch.randn(4, 2), (2, 2), "slice")], 2, "pool")
    assert issubclass(BudgetError, MedVLMError)


def test_cls_attention_from_weights() -> None:
    heads, t = 2, 4
    weights = torch.zeros(1, heads, t + 1, t + 1)
    weights[0, 0, 0, 1:] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    weights[0, 1, 0, 1:] = torch.tensor([0.3, 0.2, 0.1, 0.0])
    cls = cls_attention_from_weights(weights)
    assert cls.tolist() == pytest.approx([0.2, 0.2, 0.2, 0.2])
    with pytest.raises(BudgetError, match="batch of 2"):
        cls_attention_from_weights(torch.zeros(2, heads, 5, 5))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    grid=st.tuples(st.integers(1, 4), st.integers(1, 3)),
    slice_hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    overview_hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    budget_fraction=st.floats(0.0, 1.2),
    seed=st.integers(0, 1000),
)
def test_budget_properties(
    grid: tuple[int, int],
    slice_hw: tuple[int, int],
    overview_hw: tuple[int, int],
    budget_fraction: float,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    cols, rows = grid
    n = cols * rows if cols * rows > 1 else 0

    def part(hw: tuple[int, int], role: str) -> PartFeatures:
        t = hw[0] * hw[1]
        attn = torch.rand(t, generator=gen)
        return PartFeatures(torch.randn(t, 3, generator=gen), hw, role, attn)  # type: ignore[arg-type]

    parts = [part(slice_hw, "slice") for _ in range(n)] + [part(overview_hw, "overview")]
    total = sum(p.n_tokens for p in parts) + n
    budget = max(2 * len(parts), round(total * budget_fraction))
    for policy in ("pool", "attention"):
        reduced = reduce_visual_tokens(
            parts, budget, policy, slice_grid=(cols, rows) if n else None
        )
        assert reduced.visual_tokens <= budget
        assert all(k >= 1 for k in reduced.kept_per_part)
        for original, kept in zip(parts, reduced.parts, strict=True):
            assert kept.n_kept <= original.n_tokens
            if kept.kept_indices is not None:
                indices = kept.kept_indices.tolist()
                assert indices == sorted(set(indices))  # spatial order, no repeats
                assert torch.equal(kept.features, original.features[kept.kept_indices])
        if policy == "attention" and budget - n < total - n:
            # Within budget slack, the attention policy uses the whole feature budget.
            assert reduced.tokens_after == budget - n


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reduction_on_cuda_fp16_matches_cpu() -> None:
    choice = choose_plan_within_budget(2500, 3000, **LLAVA_RAD)
    cpu_parts = _parts_for(choice.plan)
    gpu_parts = [
        PartFeatures(
            p.features.cuda().half(),
            p.grid,
            p.role,
            None if p.cls_attention is None else p.cls_attention.cuda(),
        )
        for p in cpu_parts
    ]
    for policy in ("pool", "attention"):
        cpu = reduce_visual_tokens(cpu_parts, 1500, policy, slice_grid=choice.plan.grid)
        gpu = reduce_visual_tokens(gpu_parts, 1500, policy, slice_grid=choice.plan.grid)
        assert gpu.kept_per_part == cpu.kept_per_part
        for a, b in zip(cpu.features, gpu.features, strict=True):
            assert b.device.type == "cuda" and b.dtype == torch.float16
            torch.testing.assert_close(b.float().cpu(), a, atol=2e-3, rtol=2e-3)
