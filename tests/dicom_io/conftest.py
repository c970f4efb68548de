"""Shared corpus helpers and fixtures for the dicom_io tests (no network: download=False)."""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
_SPEC = importlib.util.find_spec("data_store")  # the pydicom-data package
PYDICOM_DATA = Path(_SPEC.origin).parent / "data" if _SPEC is not None and _SPEC.origin else None

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def corpus_file(name: str) -> Path:
    """A file from pydicom's test files or pydicom-data (never downloaded)."""
    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data missing?)")
    return Path(str(path))


def all_corpus_files() -> list[Path]:
    """Every file of pydicom's test files and of pydicom-data (DICOM or not)."""
    roots = [PYDICOM_TEST_FILES] + ([PYDICOM_DATA] if PYDICOM_DATA is not None else [])
    files = [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]
    return [p for p in files if "__pycache__" not in p.parts and p.suffix != ".py"]


def chest_pixels(rows: int = 256, cols: int = 240) -> np.ndarray:
    """A 12-bit MONOCHROME2 'chest': dark lungs either side of a bright mediastinum."""
    img = np.full((rows, cols), 3000, dtype=np.uint16)  # soft tissue / outside
    y, x = np.mgrid[0:rows, 0:cols]
    for cx in (0.3 * cols, 0.7 * cols):
        lung = ((x - cx) / (0.15 * cols)) ** 2 + ((y - 0.5 * rows) / (0.3 * rows)) ** 2 <= 1
        img[lung] = 600
    img[:, int(0.45 * cols) : int(0.55 * cols)] = 3800
    return img


def make_dx(
    *,
    pixels: np.ndarray | None = None,
    drop: tuple[str, ...] = (),
    with_pixels: bool = True,
    **overrides: Any,
) -> bytes:
    """A synthetic DX (built in the test, written with pydicom) as Part 10 bytes."""
    arr = chest_pixels() if pixels is None else pixels
    ds = Dataset()
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = "Test^Synthetic"
    ds.PatientID = "SYN-1"
    ds.PatientSex = "M"
    ds.PatientAge = "045Y"
    ds.StudyDate = "20240102"
    ds.AcquisitionDateTime = "20240102103000"
    ds.StudyDescription = "XR CHEST 1 VIEW PORTABLE"
    ds.SeriesDescription = "CHEST AP"
    ds.ViewPosition = "AP"
    ds.BodyPartExamined = "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "Synthetic"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AccessionNumber = "ACC1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.ImagerPixelSpacing = [0.2, 0.2]
    if with_pixels:
        ds.PixelData = arr.astype(np.uint16).tobytes()
    for key, value in overrides.items():
        setattr(ds, key, value)
    for key in drop:
        if key in ds:
            delattr(ds, key)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", DX_STORAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def synthetic_dx() -> Callable[..., bytes]:
    return make_dx


@pytest.fixture(scope="session")
def rg1_transcoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """RG1 (the MONOCHROME1 chest) in the lossless syntaxes pydicom-data does not ship."""
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

    src = corpus_file("RG1_UNCR.dcm")
    out: dict[str, Path] = {}
    folder = tmp_path_factory.mktemp("rg1")
    for label, syntax in (("RLE", RLELossless), ("JLSL", JPEGLSLossless)):
        ds = pydicom.dcmread(src)
        ds.compress(syntax)
        path = folder / f"RG1_{label}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out[label] = path
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = folder / "RG1_IMPL.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    out["IMPL"] = path
    ds = pydicom.dcmread(src)
    ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    path = folder / "RG1_EXPB.dcm"
    dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
    out["EXPB"] = path
    return out
