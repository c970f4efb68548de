"""Every file of pydicom's test files and of pydicom-data: no unexpected exception, ever."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from typer.testing import CliRunner

import dicom_io
from app.cli.dicom import dicom_cli

from .conftest import PYDICOM_DATA, all_corpus_files

# Files that are DICOM images and must decode: every compressed file in pydicom-data decodes,
# except the known-corrupt one (checked separately).
KNOWN_BAD = {
    "emri_small_jpeg_2k_lossless_too_short.dcm": "MissingElementError",  # cut short, UIDs lost
    "OT-PAL-8-face.dcm": "NotDicomError",  # ACR-NEMA style: no preamble, no file meta
}


def test_inspect_every_corpus_file_without_a_traceback() -> None:
    files = all_corpus_files()
    assert len(files) > 200
    result = CliRunner().invoke(dicom_cli, ["inspect", "--json", *map(str, files)])
    assert result.exit_code in (0, 1), result.output[-2000:]
    assert "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert len(doc["files"]) == len(files)
    errors = Counter(e["error"]["type"] for e in doc["files"] if not e["ok"])
    kinds = {e["error"]["kind"] for e in doc["files"] if not e["ok"]}
    assert kinds <= {"error"}, [
        e for e in doc["files"] if not e["ok"] and e["error"]["kind"] != "error"
    ]
    assert set(errors) <= {
        "NotDicomError",
        "MissingElementError",
        "InvalidElementError",
        "InvalidDicomError",
        "TruncatedFileError",
        "DecodeError",
    }
    ok = [e for e in doc["files"] if e["ok"]]
    assert sum(e["instance"]["kind"] == "image" for e in ok) > 100


@pytest.mark.skipif(PYDICOM_DATA is None, reason="pydicom-data is not installed")
def test_every_pydicom_data_file_reads_and_every_image_decodes() -> None:
    assert PYDICOM_DATA is not None
    decoded = 0
    for path in sorted(PYDICOM_DATA.glob("*.dcm")):
        if path.name in KNOWN_BAD:
            with pytest.raises(dicom_io.DicomIOError) as info:
                dicom_io.read_instance(path, decode=True)
            assert type(info.value).__name__ == KNOWN_BAD[path.name]
            continue
        inst = dicom_io.read_instance(path, decode=True)
        decoded += inst.kind is dicom_io.InstanceKind.IMAGE
    assert decoded >= 60


# Compressed files whose pixel data is known to be corrupt upstream: a clear DecodeError is expected.
KNOWN_CORRUPT_PIXELS = {
    "JPEG-lossy.dcm": "A misplaced marker segment",  # invalid SOS; JPGExtended.dcm is the fixed copy
    "JPEG2000-embedded-sequence-delimiter.dcm": "failed to read the header",
}


def _dataset_or_none(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        return None


def test_every_compressed_corpus_file_decodes_except_the_known_corrupt() -> None:
    """The installed plugins cover every compressed syntax in both corpora.

    Decoding is exercised directly on the parsed data set, so that files refused earlier for
    missing UIDs (test fixtures stripped of them) still prove their syntax decodes.
    """
    import warnings

    from pydicom.uid import UID

    from dicom_io.reader import decode_pixels

    decoded: set[str] = set()
    failures: dict[str, str] = {}
    for path in all_corpus_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _dataset_or_none(path)
        if ds is None:  # not Part 10 DICOM: covered by the inspect test above
            continue
        ts = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta is not None else None
        if not ts or not UID(ts).is_compressed or "PixelData" not in ds:
            continue
        try:
            decode_pixels(ds)
            decoded.add(UID(ts).name)
        except dicom_io.DecodeError as exc:
            failures[path.name] = str(exc)
    assert set(failures) == set(KNOWN_CORRUPT_PIXELS), failures
    for name, fragment in KNOWN_CORRUPT_PIXELS.items():
        assert fragment in failures[name]
        assert "corrupt or truncated; ask the sender to re-send it" in failures[name]
    assert {
        "JPEG Baseline (Process 1)",
        "JPEG Extended (Process 2 and 4)",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
        "JPEG-LS Lossless Image Compression",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
        "JPEG 2000 Image Compression (Lossless Only)",
        "JPEG 2000 Image Compression",
        "RLE Lossless",
    } <= decoded
