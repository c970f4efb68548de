"""Tests of the LLaVA-UHD slicing geometry (specs/uhd_slicing.md)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medvlm.errors import MedVLMError, SlicingError
from medvlm.slicing import (
    SlicePlan,
    default_max_long_edge,
    default_max_patches_per_image,
    fit_size,
    plan_slices,
    snap,
)

UHD = {"native_size": 336, "patch_size": 14, "max_slices": 7}

# The spec's worked examples at S=336, P=14, M=7:
# (width, height) -> grid (cols, rows), slice (w, h), overview (w, h).
GOLDEN = [
    ((672, 1088), (2, 3), (322, 336), (252, 420)),
    ((2500, 3000), (2, 3), (364, 294), (294, 364)),
    ((3000, 2500), (3, 2), (294, 364), (364, 294)),
    ((1024, 1024), (3, 2), (266, 406), (336, 336)),
    ((512, 4096), (1, 7), (308, 350), (112, 938)),
]


@pytest.mark.parametrize(("size", "grid", "slice_size", "overview"), GOLDEN)
def test_golden_worked_examples(
    size: tuple[int, int],
    grid: tuple[int, int],
    slice_size: tuple[int, int],
    overview: tuple[int, int],
) -> None:
    plan = plan_slices(*size, **UHD)
    assert plan.grid == grid
    assert plan.slice_size == slice_size
    assert plan.overview_size == overview
    assert plan.n_slices == grid[0] * grid[1]
    assert plan.resized_size == (slice_size[0] * grid[0], slice_size[1] * grid[1])
    assert not plan.capped


def test_golden_no_slicing() -> None:
    plan = plan_slices(336, 336, **UHD)
    assert plan.grid is None
    assert plan.slice_size is None
    assert plan.resized_size is None
    assert plan.overview_size == (336, 336)
    assert plan.n_slices == 0
    assert plan.visual_tokens == 576


def test_small_image_is_upscaled_when_not_sliced() -> None:
    plan = plan_slices(100, 100, **UHD)
    assert plan.grid is None
    assert plan.overview_size == (336, 336)


def test_large_squares_become_three_by_two() -> None:
    # The reference's floating-point near-tie between 2x3 and 3x2 resolves to 3x2.
    for side in (900, 1024, 2048, 4096, 10000):
        assert plan_slices(side, side, **UHD).grid == (3, 2)


def test_snap_and_fit() -> None:
    assert snap(27, 14) == 14
    assert snap(28, 14) == 28
    assert snap(3, 14) == 14
    assert snap(0, 14) == 14
    # Downscale path, w' from the truncated h'.
    assert fit_size(672, 1088, native_size=336, patch_size=14, upscale=False) == (252, 420)
    # Small image kept (only snapped) without upscale, resized with it.
    assert fit_size(200, 100, native_size=336, patch_size=14, upscale=False) == (196, 98)
    assert fit_size(200, 100, native_size=336, patch_size=14, upscale=True) == (462, 224)


def test_llava_rad_geometry_and_tokens() -> None:
    plan = plan_slices(2500, 3000, native_size=518, patch_size=14, max_slices=7)
    assert plan.grid == (2, 3)
    assert plan.slice_size == (574, 462)
    assert plan.overview_size == (462, 560)
    assert plan.patches_per_slice == 41 * 33
    assert plan.patches_overview == 33 * 40
    # n * patches + n separators + overview patches
    assert plan.visual_tokens == 6 * 1353 + 6 + 1320
    unsliced = plan_slices(518, 518, native_size=518, patch_size=14, max_slices=7)
    assert unsliced.visual_tokens == 1369


def test_token_accounting_with_compression() -> None:
    plan = plan_slices(672, 1088, tokens_per_image=144, **UHD)
    assert plan.visual_tokens == 6 * 144 + 6 + 144
    single = plan_slices(336, 336, tokens_per_image=144, **UHD)
    assert single.visual_tokens == 144
    assert single.separator_tokens == 0


def test_scale_factors_and_distortion() -> None:
    plan = plan_slices(2500, 3000, **UHD)
    assert plan.overview_scale == (294 / 2500, 364 / 3000)
    assert plan.resized_scale == (728 / 2500, 882 / 3000)
    assert plan.overview_aspect_distortion == pytest.approx((294 / 2500) / (364 / 3000))
    assert plan.resized_aspect_distortion is not None
    assert abs(math.log(plan.resized_aspect_distortion)) < 0.05


def test_slice_boxes_are_row_major() -> None:
    plan = plan_slices(672, 1088, **UHD)  # 2 cols x 3 rows of 322x336
    assert plan.slice_position(0) == (0, 0)
    assert plan.slice_position(1) == (1, 0)
    assert plan.slice_position(2) == (0, 1)
    assert plan.slice_box_resized(3) == (322, 336, 644, 672)
    _, _, x1, y1 = plan.slice_box_original(5)
    assert (x1, y1) == pytest.approx((672, 1088))
    with pytest.raises(SlicingError, match="slice index 6 is out of range"):
        plan.slice_position(6)
    with pytest.raises(SlicingError, match="no slices"):
        plan_slices(336, 336, **UHD).slice_position(0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0, "height": 100}, "width must be a positive integer, got 0"),
        ({"width": 100, "height": -5}, "height must be a positive integer, got -5"),
        ({"width": 10.5, "height": 100}, "width must be a positive integer, got 10.5"),
        ({"width": True, "height": 100}, "width must be a positive integer"),
    ],
)
def test_bad_sizes_raise_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SlicingError, match=message):
        plan_slices(**kwargs, **UHD)  # type: ignore[arg-type]


def test_numpy_integers_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    plan = plan_slices(np.int64(2500), np.int32(3000), **UHD)
    assert plan.grid == (2, 3)
    assert type(plan.image_size[0]) is int


def test_fit_size_refuses_non_positive_sizes() -> None:
    with pytest.raises(SlicingError, match="fit_size needs positive sizes, got 0x10"):
        fit_size(0, 10, native_size=336, patch_size=14, upscale=True)


def test_bad_parameters_raise_clear_errors() -> None:
    with pytest.raises(SlicingError, match="max_slices must be a positive integer, got 0"):
        plan_slices(100, 100, native_size=336, patch_size=14, max_slices=0)
    with pytest.raises(SlicingError, match="patch_size 400 is larger than native_size 336"):
        plan_slices(100, 100, native_size=336, patch_size=400, max_slices=7)
    with pytest.raises(SlicingError, match="max_long_edge 10 is smaller than one patch"):
        plan_slices(100, 100, max_long_edge=10, **UHD)
    assert issubclass(SlicingError, MedVLMError)


def test_extreme_aspect_is_capped_and_recorded() -> None:
    # The reference makes 1 x 20000 a 14 x 47516 image (3,394 patches).
    plan = plan_slices(1, 20000, **UHD)
    assert plan.capped
    assert "47516" in plan.cap_reasons[0]
    assert plan.cap_reason is not None and "max_long_edge" in plan.cap_reason
    assert plan_slices(336, 336, **UHD).cap_reason is None
    w, h = plan.overview_size
    assert (w // 14) * (h // 14) <= default_max_patches_per_image(336, 14) == 576
    assert max(w, h) <= default_max_long_edge(336, 14)
    tight = plan_slices(1, 20000, max_long_edge=1344, max_patches_per_image=64, **UHD)
    assert tight.overview_size == (14, 896)
    assert any("patches > max_patches_per_image 64" in r for r in tight.cap_reasons)


def test_caps_apply_to_slices() -> None:
    plan = plan_slices(100, 20000, **UHD)  # a very tall strip, sliced 1 x 7
    assert plan.grid == (1, 7)
    tight = plan_slices(100, 20000, max_long_edge=672, **UHD)
    assert tight.capped
    assert tight.slice_size is not None
    assert max(tight.slice_size) <= 672
    assert max(tight.overview_size) <= 672


def test_layout_follows_the_spatial_schema() -> None:
    plan = plan_slices(3000, 2500, **UHD)  # 3 cols x 2 rows
    assert plan.layout() == (0, ",", 1, ",", 2, "\n", 3, ",", 4, ",", 5, "\n", "overview")
    assert sum(1 for item in plan.layout() if item in (",", "\n")) == plan.separator_tokens
    tall = plan_slices(512, 4096, **UHD)  # 1 col x 7 rows: a newline after every slice
    assert tall.layout()[:4] == (0, "\n", 1, "\n")
    assert plan_slices(336, 336, **UHD).layout() == ("overview",)


def test_to_dict_is_json() -> None:
    data = plan_slices(2500, 3000, **UHD).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["grid"] == [2, 3]
    assert data["visual_tokens"] == 6 * 26 * 21 + 6 + 21 * 26


# --- An oracle written after the reference's own structure (ensure_divide, float grid cells) ---


def _ref_ensure_divide(length: float, patch: int) -> int:
    return max(math.floor(length / patch) * patch, patch)


def _ref_best_resize(size: tuple[float, float], s: int, p: int, upscale: bool) -> tuple[int, int]:
    width, height = size
    if width * height > s * s or upscale:
        r = width / height
        new_height = int(s / math.sqrt(r))
        new_width = int(new_height * r)
        return _ref_ensure_divide(new_width, p), _ref_ensure_divide(new_height, p)
    return _ref_ensure_divide(width, p), _ref_ensure_divide(height, p)


def _ref_slice(w: int, h: int, s: int, p: int, m: int) -> tuple[object, object, object]:
    log_ratio = math.log(w / h)
    multiple = min(math.ceil(w * h / (s * s)), m)
    if multiple <= 1:
        return None, None, _ref_best_resize((w, h), s, p, True)
    nums = [i for i in (multiple - 1, multiple, multiple + 1) if i != 1 and i <= m]
    grids = [[c, n // c] for n in nums for c in range(1, n + 1) if n % c == 0]
    best, min_error = [1, 1], float("inf")
    for g in grids:
        error = abs(log_ratio - math.log(g[0] / g[1]))
        if error < min_error:
            best, min_error = g, error
    cell = (_ref_ensure_divide(w, best[0]) / best[0], _ref_ensure_divide(h, best[1]) / best[1])
    return tuple(best), _ref_best_resize(cell, s, p, True), _ref_best_resize((w, h), s, p, False)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    w=st.integers(1, 8000),
    h=st.integers(1, 8000),
    s=st.sampled_from([224, 336, 448, 518]),
    m=st.integers(1, 9),
)
def test_matches_reference_structure_where_caps_do_not_bind(w: int, h: int, s: int, m: int) -> None:
    plan = plan_slices(w, h, native_size=s, patch_size=14, max_slices=m)
    if plan.capped:
        return
    grid, slice_size, overview = _ref_slice(w, h, s, 14, m)
    assert plan.grid == grid
    assert plan.slice_size == slice_size
    assert plan.overview_size == overview


def _check_plan_invariants(plan: SlicePlan) -> None:
    p = plan.patch_size
    w, h = plan.image_size
    sizes = [plan.overview_size] + ([plan.slice_size] if plan.slice_size else [])
    for sw, sh in sizes:
        assert sw % p == 0 and sh % p == 0 and sw >= p and sh >= p
        assert (sw // p) * (sh // p) <= plan.max_patches_per_image
        assert max(sw, sh) <= plan.max_long_edge
    assert 0 <= plan.n_slices <= plan.max_slices
    assert plan.n_slices != 1
    if plan.grid is None:
        assert plan.n_slices == 0 and plan.resized_size is None
        assert plan.visual_tokens == plan.patches_overview
        return
    cols, rows = plan.grid
    assert plan.n_slices == cols * rows
    assert plan.slice_size is not None and plan.resized_size is not None
    assert plan.resized_size == (plan.slice_size[0] * cols, plan.slice_size[1] * rows)
    # Full coverage: the slices tile the resized image exactly (no gap, no overlap, nothing cropped)
    # and the resized image is the whole original image.
    area = 0
    for i in range(plan.n_slices):
        x0, y0, x1, y1 = plan.slice_box_resized(i)
        assert 0 <= x0 < x1 <= plan.resized_size[0] and 0 <= y0 < y1 <= plan.resized_size[1]
        area += (x1 - x0) * (y1 - y0)
    assert area == plan.resized_size[0] * plan.resized_size[1]
    first = plan.slice_box_original(0)
    last = plan.slice_box_original(plan.n_slices - 1)
    assert first[:2] == (0.0, 0.0)
    assert last[2:] == pytest.approx((w, h))
    assert (
        plan.visual_tokens == plan.n_slices * (plan.patches_per_slice + 1) + plan.patches_overview
    )


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    w=st.integers(1, 20000),
    h=st.integers(1, 20000),
    s=st.sampled_from([224, 336, 518]),
    m=st.integers(1, 9),
)
def test_properties_on_any_size(w: int, h: int, s: int, m: int) -> None:
    _check_plan_invariants(plan_slices(w, h, native_size=s, patch_size=14, max_slices=m))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    w=st.integers(1, 20000),
    h=st.integers(1, 20000),
    patches=st.integers(1, 2000),
    long_edge=st.integers(14, 20000),
)
def test_properties_with_tight_caps(w: int, h: int, patches: int, long_edge: int) -> None:
    plan = plan_slices(w, h, max_patches_per_image=patches, max_long_edge=long_edge, **UHD)
    _check_plan_invariants(plan)


@pytest.mark.parametrize(
    "size", [(1, 1), (1, 20000), (20000, 1), (20000, 20000), (13, 13), (14, 20000), (2, 3)]
)
def test_edge_sizes_do_not_crash(size: tuple[int, int]) -> None:
    for s in (336, 518):
        _check_plan_invariants(plan_slices(*size, native_size=s, patch_size=14, max_slices=7))
