"""Every file of pydicom's test files and of pydicom-data: no unexpected exception, ever."""

from __future__ import annotations

import json
from collections import Counter

import pytest
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
