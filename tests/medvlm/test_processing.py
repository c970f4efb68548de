"""Tests of the image processor: tensors, config round trip and box mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medvlm.errors import MedVLMError, ProcessingError
from medvlm.processing import (
    CLIP_IMAGE_MEAN,
    CLIP_IMAGE_STD,
    ImageProcessor,
    ProcessedImage,
    ProcessorConfig,
)


def _film(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)


def _normalise(grey: np.ndarray) -> torch.Tensor:
    """Independent normalisation of a grey uint8 array to [3, h, w]."""
    x = torch.from_numpy(grey.astype(np.float32) / 255.0)
    mean = torch.tensor(CLIP_IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_IMAGE_STD).view(3, 1, 1)
    return (x.unsqueeze(0).repeat(3, 1, 1) - mean) / std


def _bright_box(processed: torch.Tensor) -> tuple[float, float, float, float]:
    """Pixel box (x0, y0, x1, y1) of the bright pixels of a [3, h, w] tensor."""
    mask = processed[0] > 1.5
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def test_config_defaults_and_json_round_trip() -> None:
    config = ProcessorConfig()
    assert config.native_size == 518
    assert config.patch_size == 14
    assert config.image_mean == CLIP_IMAGE_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert config.image_std == CLIP_IMAGE_STD == (0.26862954, 0.26130258, 0.27577711)
    assert config.slicing is False
    assert config.max_slices == 7
    assert config.resize_mode == "reference"
    assert config.visual_token_budget == 1500
    assert ProcessorConfig.from_json(config.to_json()) == config
    custom = ProcessorConfig(
        native_size=336, slicing=True, max_slices=9, resize_mode="fit", budget_policy="attention"
    )
    text = custom.to_json()
    assert json.loads(text)["max_slices"] == 9
    assert ProcessorConfig.from_json(text) == custom


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"native_size": 0}, "native_size must be a positive integer, got 0"),
        ({"native_size": 520}, "native_size 520 is not a multiple of patch_size 14"),
        ({"resize_mode": "crop"}, "resize_mode must be one of"),
        ({"budget_policy": "drop"}, "budget_policy must be one of"),
        ({"image_std": (0.2, 0.0, 0.2)}, "image_std must be > 0"),
        ({"image_mean": (0.5, 0.5)}, "image_mean must be three numbers"),
        ({"visual_token_budget": -1}, "visual_token_budget must be a positive integer"),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ProcessingError, match=message):
        ProcessorConfig(**kwargs)  # type: ignore[arg-type]


def test_from_json_refuses_unknown_keys_and_bad_json() -> None:
    with pytest.raises(ProcessingError, match=r"unknown processor config keys \['colour'\]"):
        ProcessorConfig.from_json('{"colour": 1}')
    with pytest.raises(ProcessingError, match="not valid JSON"):
        ProcessorConfig.from_json("{")
    assert issubclass(ProcessingError, MedVLMError)


@pytest.mark.parametrize("size", [(600, 700), (700, 600), (300, 200), (518, 518)])
def test_reference_mode_matches_transformers_clip_processor(size: tuple[int, int]) -> None:
    clip = pytest.importorskip("transformers.models.clip.image_processing_pil_clip")
    reference = clip.CLIPImageProcessorPil(
        size={"shortest_edge": 518},
        crop_size={"height": 518, "width": 518},
        image_mean=list(CLIP_IMAGE_MEAN),
        image_std=list(CLIP_IMAGE_STD),
    )
    grey = _film(*size)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    expected = reference(images=rgb, return_tensors="pt")["pixel_values"]
    out = ImageProcessor()(grey)
    assert out.overview.shape == (1, 3, 518, 518)
    assert out.slices is None and out.plan is None
    torch.testing.assert_close(out.overview, expected.float(), atol=1e-5, rtol=0)


def test_input_is_never_mutated() -> None:
    grey = _film(900, 1100)
    before = grey.copy()
    for config in (ProcessorConfig(), ProcessorConfig(slicing=True, visual_token_budget=None)):
        ImageProcessor(config)(grey)
    np.testing.assert_array_equal(grey, before)


def test_constant_image_normalisation() -> None:
    out = ImageProcessor()(np.full((600, 500), 255, dtype=np.uint8))
    for channel in range(3):
        expected = (1.0 - CLIP_IMAGE_MEAN[channel]) / CLIP_IMAGE_STD[channel]
        assert out.overview[0, channel].min().item() == pytest.approx(expected, abs=1e-5)
        assert out.overview[0, channel].max().item() == pytest.approx(expected, abs=1e-5)


def test_fit_mode_keeps_the_whole_film() -> None:
    out = ImageProcessor(ProcessorConfig(resize_mode="fit"))(_film(2500, 3000))
    assert out.plan is not None and out.plan.grid is None
    w, h = out.plan.overview_size
    assert out.overview.shape == (1, 3, h, w)
    assert (w % 14, h % 14) == (0, 0)
    assert out.to_original_box((0, 0, w, h), "overview") == (0.0, 0.0, 2500.0, 3000.0)


def test_sliced_tensors_match_the_plan_and_the_pixels() -> None:
    grey = _film(2500, 3000, seed=1)
    config = ProcessorConfig(slicing=True, visual_token_budget=None)
    out = ImageProcessor(config)(grey)
    plan = out.plan
    assert plan is not None and plan.grid == (2, 3) and plan.slice_size == (574, 462)
    assert out.budget_choice is None
    assert out.overview.shape == (1, 3, 560, 462)
    assert out.slices is not None and out.slices.shape == (6, 3, 462, 574)
    assert plan.resized_size is not None
    full = _normalise(
        np.asarray(Image.fromarray(grey).resize(plan.resized_size, Image.Resampling.BICUBIC))
    )
    for i in range(6):
        x0, y0, x1, y1 = plan.slice_box_resized(i)
        torch.testing.assert_close(out.slices[i], full[:, y0:y1, x0:x1])
    overview = _normalise(
        np.asarray(Image.fromarray(grey).resize(plan.overview_size, Image.Resampling.BICUBIC))
    )
    torch.testing.assert_close(out.overview[0], overview)
    assert out.visual_tokens == plan.visual_tokens == 9444


def test_slicing_with_budget_records_the_choice() -> None:
    out = ImageProcessor(ProcessorConfig(slicing=True))(_film(2500, 3000))
    assert out.budget_choice is not None
    assert out.budget_choice.needs_reduction
    assert not out.budget_choice.reduced_slices
    tight = ImageProcessor(ProcessorConfig(slicing=True, visual_token_budget=500))(
        _film(2500, 3000)
    )
    assert tight.budget_choice is not None and tight.budget_choice.reduced_slices
    assert tight.plan is not None
    assert tight.n_slices == tight.plan.n_slices < 6
    data = tight.to_dict()
    assert json.loads(json.dumps(data)) == data


def test_policy_none_chooses_a_plan_that_fits_unreduced() -> None:
    config = ProcessorConfig(slicing=True, budget_policy="none")
    out = ImageProcessor(config)(_film(2500, 3000))
    assert out.budget_choice is not None and out.budget_choice.reduced_slices
    assert not out.budget_choice.needs_reduction
    assert out.visual_tokens <= 1500
    # At 518 px every sliced plan has three or more parts of ~1,300 tokens: none fits 1,500.
    assert out.plan is not None and out.plan.grid is None and out.slices is None
    roomy = ProcessorConfig(slicing=True, budget_policy="none", visual_token_budget=4000)
    sliced = ImageProcessor(roomy)(_film(900, 800))
    assert sliced.plan is not None and sliced.plan.n_slices == 2
    assert sliced.visual_tokens <= 4000


def test_reference_crop_box_mapping() -> None:
    # A 1000 x 2000 portrait: resized to 518 x 1036, the crop starts 259 px down (500 original).
    out = ImageProcessor()(_film(1000, 2000))
    assert out.overview_geometry.resized_size == (518, 1036)
    assert out.overview_geometry.offset == (0, 259)
    assert out.to_original_box((0, 0, 518, 518), "overview") == (0.0, 500.0, 1000.0, 1500.0)
    assert out.to_original_box((0, 0, 1, 1), "overview", normalized=True) == (
        0.0,
        500.0,
        1000.0,
        1500.0,
    )
    x0, y0, x1, y1 = out.to_original_box((0.25, 0.5, 0.75, 1.0), "overview", normalized=True)
    assert (x0, y0, x1, y1) == pytest.approx((250.0, 1000.0, 750.0, 1500.0))


def _with_marker(width: int, height: int, box: tuple[int, int, int, int]) -> np.ndarray:
    grey = np.full((height, width), 60, dtype=np.uint8)
    x0, y0, x1, y1 = box
    grey[y0:y1, x0:x1] = 255
    return grey


def test_a_marker_on_a_slice_maps_back_to_where_it_is_on_the_film() -> None:
    marker = (1900, 2400, 2200, 2700)  # in the right column, bottom row of a 2 x 3 grid
    out = ImageProcessor(ProcessorConfig(slicing=True, visual_token_budget=None))(
        _with_marker(2500, 3000, marker)
    )
    assert out.slices is not None
    bright = [i for i in range(out.n_slices) if (out.slices[i, 0] > 1.5).any()]
    assert bright == [5]
    mapped = out.to_original_box(_bright_box(out.slices[5]), 5)
    assert mapped == pytest.approx(marker, abs=12)
    overview_box = out.to_original_box(_bright_box(out.overview[0]), "overview")
    assert overview_box == pytest.approx(marker, abs=12)


def test_a_marker_on_the_reference_crop_maps_back() -> None:
    marker = (300, 900, 500, 1100)
    out = ImageProcessor()(_with_marker(1000, 2000, marker))
    mapped = out.to_original_box(_bright_box(out.overview[0]), "overview")
    assert mapped == pytest.approx(marker, abs=6)


def test_box_mapping_errors() -> None:
    out = ImageProcessor(ProcessorConfig(slicing=True, visual_token_budget=None))(_film(2500, 3000))
    with pytest.raises(ProcessingError, match="slice index 6 is out of range"):
        out.to_original_box((0, 0, 1, 1), 6)
    with pytest.raises(ProcessingError, match="x1 < x0"):
        out.to_original_box((5, 0, 1, 1), 0)
    with pytest.raises(ProcessingError, match=r"outside 0\.\.1"):
        out.to_original_box((0, 0, 2, 1), 0, normalized=True)
    with pytest.raises(ProcessingError, match="four finite numbers"):
        out.to_original_box((0, 0, float("nan"), 1), 0)
    # Boxes beyond the part are clipped to the film.
    assert out.to_original_box((-50, -50, 10_000, 10_000), 5)[2:] == (2500.0, 3000.0)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10), dtype=np.uint16), "image must be uint8, got uint16"),
        (np.zeros((10, 10, 3), dtype=np.uint8), "must be a 2-D grey image"),
        (np.zeros((0, 10), dtype=np.uint8), "image is empty"),
        ([[0, 1], [2, 3]], "image must be a numpy array"),
    ],
)
def test_bad_images_raise_clear_errors(image: object, message: str) -> None:
    with pytest.raises(ProcessingError, match=message):
        ImageProcessor()(image)  # type: ignore[arg-type]


def test_reference_mode_on_an_extreme_strip_crops_before_resizing() -> None:
    # 3 x 2000 would be resized to 518 x 345,333 (2 GB of floats) before the crop.
    grey = _with_marker(3, 2000, (0, 1000, 3, 1001))
    out = ImageProcessor()(grey)
    assert out.overview.shape == (1, 3, 518, 518)
    assert out.overview_geometry.resized_size == (518, 345333)
    # The crop sees rows 998.5..1001.5 of the film; the one bright row 1000 maps back to itself.
    crop = out.to_original_box((0, 0, 518, 518), "overview")
    assert crop == pytest.approx((0.0, 998.497, 3.0, 1001.497), abs=1e-3)
    mapped = out.to_original_box(_bright_box(out.overview[0]), "overview")
    assert mapped == pytest.approx((0.0, 1000.0, 3.0, 1001.0), abs=0.25)


def test_tiny_and_strip_images() -> None:
    for size in ((1, 1), (3, 2000), (2000, 3)):
        for config in (
            ProcessorConfig(),
            ProcessorConfig(resize_mode="fit"),
            ProcessorConfig(slicing=True),
        ):
            out: ProcessedImage = ImageProcessor(config)(_film(*size))
            assert out.overview.ndim == 4 and out.overview.shape[:2] == (1, 3)
            assert torch.isfinite(out.overview).all()
