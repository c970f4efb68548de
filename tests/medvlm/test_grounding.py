"""The grounding method on a small differentiable model whose dependence on one film region is known
by construction: the film is dark except a bright square, and the toy model's score rises only with
bright patch tokens. Gradient x input over its visual tokens, laid back through the real slicing
geometry (slicing on and off, portrait and landscape, flipped films), and MONAI occlusion over the
film must both put the box on the square."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image

from medvlm.grounding import (
    FilmMap,
    GroundingError,
    PartSpan,
    TokenLayout,
    box_iou,
    box_side,
    gradient_x_input,
    heatmap_png,
    lay_back,
    map_to_boxes,
    occlusion_film_map,
)
from medvlm.processing import ImageProcessor, PartRef, ProcessedImage, ProcessorConfig

PATCH = 14
Square = tuple[int, int, int, int]  # x0, y0, x1, y1 in film pixels


def film_with_square(width: int, height: int, square: Square, seed: int = 0) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    film = rng.integers(10, 40, size=(height, width), dtype=np.uint8)
    x0, y0, x1, y1 = square
    film[y0:y1, x0:x1] = 250
    return film


def _patch_tokens(pixels: torch.Tensor) -> torch.Tensor:
    """Toy encoder: the mean of each 14 x 14 patch per channel -> ``[T, 3]`` tokens, row-major."""
    pooled = torch.nn.functional.avg_pool2d(pixels, PATCH)  # [1, 3, rows, cols]
    return pooled[0].permute(1, 2, 0).reshape(-1, 3)


def toy_tokens(processed: ProcessedImage) -> tuple[torch.Tensor, TokenLayout]:
    """Visual tokens of every part (slices row-major, a separator after each, then the overview)."""
    pieces: list[torch.Tensor] = []
    spans: list[PartSpan] = []
    position = 0
    parts: list[tuple[PartRef, torch.Tensor]] = []
    if processed.slices is not None:
        parts.extend((i, processed.slices[i : i + 1]) for i in range(processed.n_slices))
    parts.append(("overview", processed.overview))
    for ref, pixels in parts:
        tokens = _patch_tokens(pixels)
        grid = (pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH)
        spans.append(PartSpan(ref, position, int(tokens.shape[0]), grid, kept_grid=grid))
        pieces.append(tokens)
        position += int(tokens.shape[0])
        if ref != "overview":
            pieces.append(torch.zeros(1, 3))  # a separator token: no image content
            position += 1
    return torch.cat(pieces), TokenLayout(tuple(spans), position)


def toy_score(tokens: torch.Tensor) -> torch.Tensor:
    """Rises only with bright patches (normalised intensity above 1): the square, by construction."""
    return torch.nn.functional.softplus(4.0 * (tokens.mean(dim=-1) - 1.0)).sum()


def ground_square(
    width: int, height: int, square: Square, config: ProcessorConfig
) -> tuple[list[list[float]], FilmMap]:
    film = film_with_square(width, height, square)
    processed = ImageProcessor(config)(film)
    tokens, layout = toy_tokens(processed)
    relevance, score = gradient_x_input(toy_score, tokens)
    assert score > 0
    film_map = lay_back(layout.split(relevance), processed)
    boxes, stats = map_to_boxes(film_map, label="square")
    assert boxes and stats["regions"] >= 1
    return [b.rounded() for b in boxes], film_map


SLICED = ProcessorConfig(native_size=168, patch_size=PATCH, slicing=True, max_slices=4,
                         visual_token_budget=None)  # fmt: skip
FIT = ProcessorConfig(native_size=224, patch_size=PATCH, resize_mode="fit")
REFERENCE = ProcessorConfig(native_size=224, patch_size=PATCH)  # LLaVA-Rad: centre crop


@pytest.mark.parametrize("config", [SLICED, FIT, REFERENCE], ids=["sliced", "fit", "reference"])
@pytest.mark.parametrize(
    ("width", "height", "square"),
    [
        (300, 420, (40, 170, 120, 250)),  # portrait, square on the viewer's left
        (420, 300, (260, 110, 360, 190)),  # landscape (the portrait film rotated), on the right
        (360, 360, (140, 140, 220, 220)),  # square film, centred
    ],
)
def test_the_box_lands_on_the_region_the_model_depends_on(
    config: ProcessorConfig, width: int, height: int, square: Square
) -> None:
    boxes, film_map = ground_square(width, height, square, config)
    first = boxes[0]
    assert 0 <= first[0] < first[2] <= width and 0 <= first[1] < first[3] <= height
    # the box sits on the square (token cells are 14 model pixels: tens of film pixels here)
    centre = ((first[0] + first[2]) / 2, (first[1] + first[3]) / 2)
    assert square[0] <= centre[0] <= square[2] and square[1] <= centre[1] <= square[3]
    assert box_iou([first], [square])[0, 0] >= 0.4, (first, square)
    assert film_map.values.shape[1] / film_map.values.shape[0] == pytest.approx(
        width / height, rel=0.02
    )


@pytest.mark.parametrize("config", [SLICED, REFERENCE], ids=["sliced", "reference"])
def test_flipping_the_film_mirrors_the_box(config: ProcessorConfig) -> None:
    width, height, square = 330, 400, (30, 160, 110, 240)
    boxes, _ = ground_square(width, height, square, config)
    mirrored: Square = (width - square[2], square[1], width - square[0], square[3])
    flipped, _ = ground_square(width, height, mirrored, config)
    x0, y0, x1, y1 = boxes[0]
    expected = [width - x1, y0, width - x0, y1]
    assert box_iou([flipped[0]], [expected])[0, 0] >= 0.7
    assert box_iou([flipped[0]], [mirrored])[0, 0] >= 0.5


def test_transposing_the_film_transposes_the_box() -> None:
    square: Square = (40, 200, 120, 280)
    boxes, _ = ground_square(300, 420, square, SLICED)
    turned, _ = ground_square(420, 300, (square[1], square[0], square[3], square[2]), SLICED)
    x0, y0, x1, y1 = boxes[0]
    assert box_iou([turned[0]], [[y0, x0, y1, x1]])[0, 0] >= 0.6


def test_the_reference_crop_leaves_what_the_model_never_saw_at_zero() -> None:
    # LLaVA-Rad's centre crop of a 200 x 400 film keeps rows 100..300: a square at the top is unseen.
    film = film_with_square(200, 400, (60, 10, 140, 60))
    processed = ImageProcessor(REFERENCE)(film)
    tokens, layout = toy_tokens(processed)
    relevance, _ = gradient_x_input(toy_score, tokens)
    film_map = lay_back(layout.split(relevance), processed)
    rows = film_map.values.shape[0]
    band = slice(round(rows * 100 / 400), round(rows * 300 / 400))
    outside = np.concatenate([film_map.values[: band.start], film_map.values[band.stop :]])
    assert np.all(outside == 0.0)
    assert np.any(film_map.values[band] != 0.0)
    boxes, _ = map_to_boxes(film_map, label="square")
    assert all(b.box[1] >= 99.0 and b.box[3] <= 301.0 for b in boxes)


def test_monai_occlusion_finds_the_region_without_gradients() -> None:
    width, height, square = 320, 400, (200, 60, 280, 140)
    film = film_with_square(width, height, square)

    def score_film(pixels: NDArray[np.uint8]) -> float:
        # the film's own bright area inside the square, as a black box would see it
        x0, y0, x1, y1 = square
        return float((pixels[y0:y1, x0:x1] > 200).mean())

    film_map, baseline, details = occlusion_film_map(score_film, film, grid=8)
    assert baseline == pytest.approx(1.0)
    assert details["forward_passes"] == 8 * 8 + 1
    boxes, _ = map_to_boxes(film_map, label="square")
    assert box_iou([boxes[0].rounded()], [square])[0, 0] >= 0.5


def test_no_positive_relevance_gives_no_box_and_says_why() -> None:
    flat = FilmMap(values=-np.ones((10, 8), dtype=np.float32), film_size=(80, 100))
    boxes, stats = map_to_boxes(flat, label="x")
    assert boxes == [] and stats["regions"] == 0 and "no positive relevance" in stats["reason"]
    with pytest.raises(GroundingError, match="threshold"):
        map_to_boxes(flat, label="x", threshold=1.5)


def test_two_separate_regions_give_two_boxes_largest_first() -> None:
    values = np.zeros((100, 100), dtype=np.float32)
    values[10:30, 10:40] = 1.0
    values[60:75, 70:85] = 0.9
    boxes, stats = map_to_boxes(FilmMap(values, (200, 100)), label="x")
    assert [b.rounded() for b in boxes] == [[20.0, 10.0, 80.0, 30.0], [140.0, 60.0, 170.0, 75.0]]
    assert stats["regions"] == 2
    assert stats["mass_in_boxes"] == pytest.approx(1.0)


def test_layout_must_match_the_visual_tokens() -> None:
    with pytest.raises(GroundingError, match="describe"):
        PartSpan("overview", 0, 10, (3, 3), kept_grid=(3, 3))
    layout = TokenLayout((PartSpan("overview", 0, 9, (3, 3), kept_grid=(3, 3)),), 9)
    with pytest.raises(GroundingError, match="one value per visual token"):
        layout.split(np.zeros(8, dtype=np.float32))
    # attention-kept tokens land on their own cells, the others stay zero
    kept = PartSpan("overview", 0, 2, (3, 3), kept_indices=(0, 8))
    assert kept.cell_grid(np.array([1.0, 2.0], dtype=np.float32)).tolist() == [
        [1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 2.0],
    ]


@pytest.mark.parametrize(
    ("box", "orientation", "view", "side"),
    [
        ((10, 0, 40, 10), None, "PA", "right"),  # viewer's left = patient's right (usual display)
        ((60, 0, 90, 10), None, "AP", "left"),
        ((10, 0, 40, 10), ("L", "F"), None, "right"),
        ((10, 0, 40, 10), ("R", "F"), None, "left"),  # flipped film
        ((60, 0, 90, 10), ("R", "H"), None, "right"),
        ((45, 0, 55, 10), None, None, None),  # on the midline
        ((10, 0, 40, 10), None, "LL", None),  # lateral view: no left/right across the film
        ((10, 0, 40, 10), ("A", "F"), None, None),
    ],
)
def test_the_side_of_a_box_follows_the_film_orientation(
    box: tuple[int, int, int, int],
    orientation: tuple[str, str] | None,
    view: str | None,
    side: str | None,
) -> None:
    reading = box_side(box, 100, patient_orientation=orientation, view_position=view)
    assert reading.side == side
    assert reading.basis


def test_heatmap_png_is_an_rgba_overlay_of_the_map() -> None:
    values = np.zeros((20, 10), dtype=np.float32)
    values[5, 5] = 2.0
    image = Image.open(io.BytesIO(heatmap_png(values)))
    assert image.mode == "RGBA" and image.size == (10, 20)
    alpha = np.asarray(image)[..., 3]
    assert alpha[5, 5] == 200 and alpha.sum() == 200  # transparent wherever the map is zero
