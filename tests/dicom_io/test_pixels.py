"""The pixel pipeline: what the radiologist and the model see, and the recorded steps."""

from __future__ import annotations

import numpy as np
import pytest
from highdicom.pixels import apply_voi_window
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut

import dicom_io
from dicom_io import NotEligibleError
from dicom_io.pixels import InvertMonochrome1, ModalityLUT, PercentileWindow, Window
from dicom_io.reader import parse

from .conftest import PYDICOM_TEST_FILES, chest_pixels, corpus_file, make_dx


def _region(display: np.ndarray, y0: float, y1: float, x0: float, x1: float) -> float:
    h, w = display.shape
    return float(display[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_J2KR.dcm"])
def test_rg1_monochrome1_chest_shows_dark_lungs_and_bright_mediastinum(name: str) -> None:
    rendered = dicom_io.render(corpus_file(name))
    display = rendered.display
    assert display.dtype == np.uint8
    assert display.shape == (1955, 1841)
    right_lung = _region(display, 0.25, 0.45, 0.20, 0.35)
    left_lung = _region(display, 0.25, 0.45, 0.65, 0.80)
    mediastinum = _region(display, 0.25, 0.55, 0.45, 0.55)
    assert mediastinum > right_lung + 40
    assert mediastinum > left_lung + 40
    names = [s["transform"] for s in rendered.steps]
    assert names == ["Decode", "ModalityLUT", "Window", "InvertMonochrome1", "ToDisplay"]
    window = rendered.steps[2]
    assert (window["center"], window["width"], window["source"]) == (15000.0, 30000.0, "file")


def test_rg1_bad_pixel_spacing_is_tolerated_and_reported() -> None:
    rendered = dicom_io.render(corpus_file("RG1_UNCR.dcm"))
    assert rendered.pixel_spacing_mm is None
    assert any("(0028,0030) 'PixelSpacing'" in w and "0.000" in w for w in rendered.warnings)


def test_image_is_float_in_unit_range() -> None:
    rendered = dicom_io.render(corpus_file("RG3_J2KR.dcm"))
    assert rendered.image.dtype == np.float32
    assert float(rendered.image.min()) >= 0.0
    assert float(rendered.image.max()) <= 1.0
    np.testing.assert_array_equal(rendered.display, (rendered.image * 255 + 0.5).astype(np.uint8))


def test_synthetic_dx_without_window_uses_percentiles_and_imager_spacing() -> None:
    rendered = dicom_io.render(make_dx())
    names = [s["transform"] for s in rendered.steps]
    assert names == ["Decode", "ModalityLUT", "PercentileWindow", "ToDisplay"]
    assert rendered.pixel_spacing_mm == (0.2, 0.2)
    assert any("ImagerPixelSpacing" in w for w in rendered.warnings)
    lungs = _region(rendered.display, 0.4, 0.6, 0.25, 0.35)
    mediastinum = _region(rendered.display, 0.4, 0.6, 0.46, 0.54)
    assert mediastinum > 200 and lungs < 30


def test_sixteen_bit_values_are_windowed_at_full_precision() -> None:
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))  # 12-bit ramp, above 255
    rendered = dicom_io.render(make_dx(pixels=ramp, WindowCenter=2048, WindowWidth=4096))
    row = rendered.image[0]
    assert np.all(np.diff(row) > 0), "a 16-bit ramp must stay strictly increasing"
    assert row[ramp[0] == 1024][0] == pytest.approx(0.25, abs=0.002)
    assert row[ramp[0] == 3072][0] == pytest.approx(0.75, abs=0.002)


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    pixels = chest_pixels(64, 64)
    window = {"WindowCenter": 2048, "WindowWidth": 4096}
    mono2 = dicom_io.render(make_dx(pixels=pixels, **window)).image
    mono1 = dicom_io.render(
        make_dx(pixels=pixels, PhotometricInterpretation="MONOCHROME1", **window)
    ).image
    np.testing.assert_allclose(mono1 + mono2, 1.0, atol=1e-6)


def test_rescale_slope_intercept_is_applied_and_recorded() -> None:
    rendered = dicom_io.render(
        make_dx(RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1000, WindowWidth=2000)
    )
    step = rendered.steps[1]
    assert step == {
        "transform": "ModalityLUT",
        "method": "rescale",
        "slope": 2.0,
        "intercept": -100.0,
    }


def test_unusable_window_falls_back_with_a_warning() -> None:
    rendered = dicom_io.render(make_dx(WindowCenter=100, WindowWidth=0))
    assert rendered.steps[2]["transform"] == "PercentileWindow"
    assert any("window center/width" in w for w in rendered.warnings)


def test_voi_lut_sequence_is_used() -> None:
    rendered = dicom_io.render(corpus_file("vlut_04.dcm"))
    assert [s["transform"] for s in rendered.steps][2] == "VOILUTFromFile"
    assert rendered.image.min() >= 0.0
    assert rendered.image.max() <= 1.0


def test_modality_lut_sequence_is_used() -> None:
    rendered = dicom_io.render(corpus_file("mlut_18.dcm"))
    assert rendered.steps[1] == {"transform": "ModalityLUT", "method": "lut_sequence"}


def test_tiny_monochrome1_cr_render_records_inversion() -> None:
    path = PYDICOM_TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"
    rendered = dicom_io.render(path)
    assert rendered.steps[-2] == {"transform": "InvertMonochrome1"}
    assert rendered.pixel_spacing_mm == (0.1, 0.1)


def test_colour_and_multiframe_render_with_warnings() -> None:
    colour = dicom_io.render(corpus_file("US1_UNCR.dcm"))
    assert colour.image.shape == (480, 640)
    assert any("colour image" in w for w in colour.warnings)
    multi = dicom_io.render(corpus_file("emri_small.dcm"))
    assert multi.image.shape == (64, 64)
    assert "multi-frame image: rendered frame 1 of 10" in multi.warnings


def test_structured_report_cannot_be_rendered() -> None:
    with pytest.raises(NotEligibleError, match="structured report, not an image"):
        dicom_io.render(corpus_file("test-SR.dcm"))


def test_read_and_render_returns_none_for_non_images() -> None:
    inst, rendered = dicom_io.read_and_render(corpus_file("test-SR.dcm"))
    assert rendered is None and inst.kind is dicom_io.InstanceKind.STRUCTURED_REPORT


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_matches_pydicom_apply_voi_lut(function: str) -> None:
    # The oracle is pydicom's VOI LUT (PS3.3 C.11.2.1.2), scaled from its 16-bit output to [0, 1].
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 16, 0
    voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = 40.0, 401.0, function
    values = np.linspace(-1000.0, 1000.0, 4001)[None, :]
    expected = apply_voi_lut(values, voi) / 65535.0
    out, record = Window(center=40.0, width=401.0, function=function)(values)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert record["function"] == function


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_and_monochrome1_inversion_match_highdicom(function: str) -> None:
    # highdicom is the oracle: its window, and its fused window-and-invert for MONOCHROME1 (ours
    # stays its own recorded step: it also follows VOI LUTs and percentile windows).
    values = np.linspace(-1000.0, 1000.0, 4001)[None, :]
    windowed, _ = Window(center=40.0, width=401.0, function=function)(values)
    np.testing.assert_allclose(windowed, apply_voi_window(values, 40.0, 401.0, function), atol=1e-6)
    inverted, record = InvertMonochrome1()(windowed)
    expected = apply_voi_window(values, 40.0, 401.0, function, invert=True)
    np.testing.assert_allclose(inverted, expected, atol=1e-6)
    assert record == {"transform": "InvertMonochrome1"}


def test_one_wide_linear_window_is_a_step_at_center_minus_half() -> None:
    # PS3.3 C.11.2.1.2.1: width 1 maps x <= c - 0.5 to the minimum and x > c - 0.5 to the maximum.
    out, _ = Window(center=10.0, width=1.0)(np.array([[8.0, 9.0, 9.4, 9.6, 10.0, 12.0]]))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])


def test_percentile_window_maps_its_percentiles_onto_the_unit_range() -> None:
    arr = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    out, record = PercentileWindow(lower=10.0, upper=90.0)(arr)
    lo, hi = np.percentile(arr, [10.0, 90.0])
    np.testing.assert_allclose(out, np.clip((arr - lo) / (hi - lo), 0.0, 1.0), atol=1e-6)
    assert (record["low"], record["high"]) == pytest.approx((lo, hi))


def test_transforms_do_not_mutate_their_input() -> None:
    parsed = parse(make_dx(RescaleSlope=2), full=True)
    arr = chest_pixels(32, 32).astype(np.float32) / 4096
    before = arr.copy()
    for transform in (
        ModalityLUT(parsed.dataset),
        Window(0.5, 0.5),
        PercentileWindow(),
        InvertMonochrome1(),
    ):
        transform(arr)
    np.testing.assert_array_equal(arr, before)
