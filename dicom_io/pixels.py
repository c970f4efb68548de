"""The pixel pipeline: small transforms (MONAI style) that each record what they did.

Order (DICOM PS3.3 C.11 grayscale pipeline): colour to luminance (display only), modality LUT or
rescale, VOI LUT or window from the file (else a robust percentile window), MONOCHROME1 inversion,
then an 8-bit display copy. Windowing works on the full-precision values: 16-bit data is never
clipped to 8 bits before it. Transforms never mutate their input array.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut

from dicom_io.errors import DecodeError, DicomIOError, NotEligibleError
from dicom_io.header import int_value, text_value
from dicom_io.instance import DicomInstance, InstanceKind, JSONValue
from dicom_io.reader import ParsedInstance, Source, decode_pixels, parse

__all__ = [
    "InvertMonochrome1",
    "ModalityLUT",
    "PercentileWindow",
    "PixelTransform",
    "RenderedImage",
    "ToLuminance",
    "VOILUTFromFile",
    "Window",
    "build_pipeline",
    "pixel_spacing",
    "read_and_render",
    "render",
    "render_parsed",
]

FloatImage = NDArray[np.float32]
_SUBSAMPLE_TARGET = 512 * 512


@dataclass(frozen=True, eq=False)
class RenderedImage:
    """The image the model sees: ``image`` H x W float32 in [0, 1] (bright = dense), and uint8."""

    image: FloatImage
    display: NDArray[np.uint8]
    pixel_spacing_mm: tuple[float, float] | None
    steps: tuple[dict[str, JSONValue], ...]
    warnings: tuple[str, ...] = field(default=())

    def stats(self) -> dict[str, JSONValue]:
        """Shape and intensity statistics (for the CLI and logs: no patient data)."""
        img = self.image
        return {
            "rows": int(img.shape[0]),
            "columns": int(img.shape[1]),
            "min": round(float(img.min()), 4),
            "max": round(float(img.max()), 4),
            "mean": round(float(img.mean()), 4),
            "std": round(float(img.std()), 4),
            "display_mean": round(float(self.display.mean()), 2),
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
        }


class PixelTransform(Protocol):
    """One step: returns the new array and a JSON record of what it did."""

    name: ClassVar[str]

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]: ...


def _first_number(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _luminance(rgb: NDArray[Any]) -> FloatImage:
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.asarray(rgb[..., :3].astype(np.float32) @ weights, dtype=np.float32)


@dataclass(frozen=True)
class ToLuminance:
    """Colour to luminance (Rec. 601 weights); PALETTE COLOR is looked up first. Display only."""

    ds: Dataset
    name: ClassVar[str] = "ToLuminance"

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]:
        photometric = text_value(self.ds, "PhotometricInterpretation") or ""
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, self.ds)
        return _luminance(arr), {"transform": self.name, "photometric": photometric}


@dataclass(frozen=True)
class ModalityLUT:
    """Stored to modality values: Modality LUT Sequence (pydicom) or Rescale Slope/Intercept."""

    ds: Dataset
    name: ClassVar[str] = "ModalityLUT"

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]:
        if "ModalityLUTSequence" in self.ds:
            out = np.asarray(apply_modality_lut(arr, self.ds))
            return out, {"transform": self.name, "method": "lut_sequence"}
        slope = _first_number(self.ds.get("RescaleSlope"))
        intercept = _first_number(self.ds.get("RescaleIntercept"))
        slope = 1.0 if slope is None or slope == 0 else slope
        intercept = 0.0 if intercept is None else intercept
        if slope == 1.0 and intercept == 0.0:  # identity: keep the stored values (and save a pass)
            return arr, {
                "transform": self.name,
                "method": "identity",
                "slope": 1.0,
                "intercept": 0.0,
            }
        out = arr.astype(np.float32)  # a copy: the decoded array is left untouched
        if slope != 1.0:
            out *= np.float32(slope)
        if intercept != 0.0:
            out += np.float32(intercept)
        record: dict[str, JSONValue] = {"transform": self.name, "method": "rescale"}
        record.update({"slope": slope, "intercept": intercept})
        return out, record


@dataclass(frozen=True)
class Window:
    """A DICOM window (PS3.3 C.11.2.1.2) mapped straight onto [0, 1].

    ``function`` is LINEAR, LINEAR_EXACT or SIGMOID; ``source`` says where the values came from.
    The values are ``highdicom.pixels.apply_voi_window``'s (its ``invert=True`` equals this then
    :class:`InvertMonochrome1`; tests use it as the oracle), computed in place on one float32 copy:
    highdicom allocates three full-size temporaries and took about twice as long per film.
    """

    center: float
    width: float
    function: str = "LINEAR"
    source: str = "file"
    name: ClassVar[str] = "Window"

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]:
        out = arr.astype(np.float32)  # always a new array: the input is left untouched
        c, w = self.center, self.width
        if self.function == "SIGMOID":
            out = (1.0 / (1.0 + np.exp(-4.0 * (out - c) / w))).astype(np.float32)
        else:
            if self.function == "LINEAR_EXACT":
                offset, scale = c, 1.0 / w
            else:
                offset, scale = c - 0.5, 1.0 / max(w - 1.0, 1e-6)
            out *= np.float32(scale)
            out += np.float32(0.5 - offset * scale)
            np.clip(out, 0.0, 1.0, out=out)
        record: dict[str, JSONValue] = {"transform": self.name, "source": self.source}
        record.update({"center": c, "width": w, "function": self.function})
        return out, record


@dataclass(frozen=True)
class PercentileWindow:
    """A robust window from the image itself: the [lower, upper] percentiles become [0, 1]."""

    lower: float = 0.5
    upper: float = 99.5
    name: ClassVar[str] = "PercentileWindow"

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]:
        step = max(1, int(math.sqrt(arr.size / _SUBSAMPLE_TARGET)))
        sample = np.asarray(arr[::step, ::step], dtype=np.float32)
        finite = sample[np.isfinite(sample)]
        lo, hi = np.percentile(finite, [self.lower, self.upper]) if finite.size else (0.0, 0.0)
        lo, hi = float(lo), float(hi)
        if hi <= lo and finite.size:
            lo, hi = float(finite.min()), float(finite.max())
        width = hi - lo
        out = arr.astype(np.float32)
        if arr.dtype.kind == "f":
            np.nan_to_num(out, copy=False)
        if width > 0:
            out *= np.float32(1.0 / width)
            out -= np.float32(lo / width)
            np.clip(out, 0.0, 1.0, out=out)
        else:
            out[...] = 0.0
        record: dict[str, JSONValue] = {
            "transform": self.name,
            "percentiles": [self.lower, self.upper],
        }
        record.update({"low": lo, "high": hi, "subsample_step": step, "constant": width <= 0})
        return out, record


@dataclass(frozen=True)
class VOILUTFromFile:
    """The first VOI LUT of the file's VOI LUT Sequence (pydicom), normalised to [0, 1]."""

    ds: Dataset
    name: ClassVar[str] = "VOILUTFromFile"

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]:
        item = self.ds.VOILUTSequence[0]
        descriptor = [int(v) for v in item.LUTDescriptor]
        if arr.dtype.kind == "f":  # a LUT indexes integers: round rescaled values back
            arr = np.rint(arr).astype(np.int64)
        out = np.asarray(apply_voi_lut(arr, self.ds, index=0, prefer_lut=True), dtype=np.float32)
        top = max(float(2 ** descriptor[2] - 1), float(out.max()), 1.0)
        out = out / np.float32(top)
        return out, {
            "transform": self.name,
            "lut_descriptor": list(descriptor),
            "normalised_by": top,
        }


@dataclass(frozen=True)
class InvertMonochrome1:
    """MONOCHROME1 shows low values bright: invert so that bright always means dense.

    ``in_place`` lets a pipeline that owns its float32 working array skip one full-size copy; the
    default leaves the input untouched like every other transform.
    """

    in_place: bool = False
    name: ClassVar[str] = "InvertMonochrome1"

    def __call__(self, arr: NDArray[Any]) -> tuple[NDArray[Any], dict[str, JSONValue]]:
        if self.in_place and arr.dtype == np.float32:
            np.subtract(np.float32(1.0), arr, out=arr)
            return arr, {"transform": self.name}
        return np.subtract(np.float32(1.0), arr, dtype=np.float32), {"transform": self.name}


def _file_window(ds: Dataset) -> tuple[Window | None, str | None]:
    center = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if center is None and width is None:
        return None, None
    function = (text_value(ds, "VOILUTFunction") or "LINEAR").upper()
    if function not in {"LINEAR", "LINEAR_EXACT", "SIGMOID"}:
        function = "LINEAR"
    if center is None or width is None or width < 1 or (function != "LINEAR" and width <= 0):
        return None, (
            f"(0028,1050)/(0028,1051) window center/width {center}/{width} unusable "
            "(width must be >= 1): used a percentile window instead"
        )
    return Window(center, width, function, source="file"), None


def build_pipeline(
    ds: Dataset, notes: list[str], voi: Window | PercentileWindow | None = None
) -> list[PixelTransform]:
    """The transforms for ``ds``, chosen from its header; notes fallbacks in ``notes``.

    ``voi`` replaces the file's VOI LUT or window (a reader's window/level choice); the modality LUT
    and MONOCHROME1 inversion still apply, so the values it names are modality values.
    """
    photometric = (text_value(ds, "PhotometricInterpretation") or "").upper()
    steps: list[PixelTransform] = []
    monochrome = photometric in {"MONOCHROME1", "MONOCHROME2"}
    if not monochrome:
        steps.append(ToLuminance(ds))
        notes.append(f"colour image ({photometric}) shown as luminance; not a model image")
        steps.append(PercentileWindow())
        return steps
    steps.append(ModalityLUT(ds))
    voi_seq = ds.get("VOILUTSequence")
    if voi is not None:
        steps.append(voi)
    elif voi_seq and "LUTDescriptor" in voi_seq[0] and "LUTData" in voi_seq[0]:
        steps.append(VOILUTFromFile(ds))
    else:
        window, problem = _file_window(ds)
        if problem:
            notes.append(problem)
        steps.append(window if window is not None else PercentileWindow())
    if photometric == "MONOCHROME1":
        # The window / VOI LUT step before it always returns a new array: safe to work in place.
        steps.append(InvertMonochrome1(in_place=True))
    return steps


def pixel_spacing(ds: Dataset, notes: list[str]) -> tuple[float, float] | None:
    """(row, column) mm from PixelSpacing, else ImagerPixelSpacing; bad values are reported."""
    for keyword, tag in (("PixelSpacing", "(0028,0030)"), ("ImagerPixelSpacing", "(0018,1164)")):
        raw = ds.get(keyword)
        if raw is None or raw == "":
            continue
        values = list(raw) if isinstance(raw, MultiValue | list | tuple) else [raw]
        numbers = [_first_number(v) for v in values]
        if len(numbers) == 2 and all(n is not None and n > 0 for n in numbers):
            row, col = numbers
            assert row is not None and col is not None
            if keyword == "ImagerPixelSpacing":
                notes.append(
                    "pixel spacing from (0018,1164) 'ImagerPixelSpacing' (at the detector)"
                )
            return (row, col)
        shown = [str(v) for v in values]
        notes.append(f"{tag} '{keyword}' value {shown} is not two positive numbers: ignored")
    return None


def render_parsed(
    parsed: ParsedInstance, voi: Window | PercentileWindow | None = None
) -> RenderedImage:
    """Decode and render an already parsed (``full=True``) image instance."""
    instance = parsed.instance
    if instance.kind is not InstanceKind.IMAGE:
        raise NotEligibleError(
            f"Unable to render the instance: it is a {instance.kind.value.replace('_', ' ')}, "
            "not an image. Only image instances have pixels to show."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings quote element values (PHI)
            return _render(parsed, voi)
    except DicomIOError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a decoder panic or an inconsistent LUT / pixel module
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise DecodeError(
            f"Unable to render the image ({detail}): its pixel module (LUTs, window, palette, "
            "bits) is inconsistent with its pixel data. Ask the sender to re-send it."
        ) from exc


def _render(parsed: ParsedInstance, voi: Window | PercentileWindow | None = None) -> RenderedImage:
    instance = parsed.instance
    ds = parsed.dataset
    arr = decode_pixels(ds)
    notes: list[str] = []
    frames = int_value(ds, "NumberOfFrames") or 1
    if frames > 1:
        notes.append(f"multi-frame image: rendered frame 1 of {frames}")
    records: list[dict[str, JSONValue]] = [
        {
            "transform": "Decode",
            "transfer_syntax": instance.transfer_syntax_uid,
            "dtype": str(arr.dtype),
        }
    ]
    for transform in build_pipeline(ds, notes, voi):
        arr, record = transform(arr)
        records.append(record)
    image = np.ascontiguousarray(arr, dtype=np.float32)
    if image.ndim != 2:
        raise NotEligibleError(
            f"Unable to render the instance: decoded pixels have shape {image.shape}, "
            "expected rows x columns."
        )
    scaled = np.multiply(image, np.float32(255.0))
    scaled += np.float32(0.5)
    display = scaled.astype(np.uint8)
    records.append({"transform": "ToDisplay", "dtype": "uint8", "scale": 255})
    spacing = pixel_spacing(ds, notes)
    return RenderedImage(image, display, spacing, tuple(records), tuple(notes))


def render(source: Source, voi: Window | PercentileWindow | None = None) -> RenderedImage:
    """Decode and render the image in ``source`` (path or bytes) as the model and reader see it.

    ``voi``: a window (or percentile window) instead of the file's, for a reader's window/level.

    Raises :class:`~dicom_io.errors.DicomIOError` subclasses only (``NotEligibleError`` for an
    instance without pixels, ``DecodeError`` for corrupt pixel data).
    """
    return render_parsed(parse(source, full=True), voi)


def read_and_render(source: Source) -> tuple[DicomInstance, RenderedImage | None]:
    """Parse, validate, decode and render in one pass (the ingest path); None for non-images."""
    parsed = parse(source, full=True)
    if parsed.instance.kind is not InstanceKind.IMAGE:
        return parsed.instance, None
    return parsed.instance, render_parsed(parsed)
