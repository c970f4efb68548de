"""``radcheck dicom inspect`` / ``render`` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from app.cli.dicom import dicom_cli

from .conftest import corpus_file, make_dx

runner = CliRunner()


def test_inspect_json_reports_facts_selection_and_pixels() -> None:
    files = [str(corpus_file(n)) for n in ("RG1_J2KR.dcm", "RG3_UNCR.dcm", "test-SR.dcm")]
    result = runner.invoke(dicom_cli, ["inspect", "--json", *files])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rg1, rg3, sr = doc["files"]
    assert rg1["instance"]["header"]["view_position"] == "PA"
    assert rg1["pixels"]["rows"] == 1955
    assert [s["transform"] for s in rg1["render"]["steps"]][-2] == "InvertMonochrome1"
    assert sr["instance"]["kind"] == "structured_report" and "pixels" not in sr
    assert doc["selection"]["chosen"] == rg1["instance"]["sop_instance_uid"]
    reasons = {r["sop_instance_uid"]: r["reason"] for r in doc["selection"]["reasons"]}
    assert "EXTREMITY is not the chest" in reasons[rg3["instance"]["sop_instance_uid"]]
    assert "patient_name" not in result.stdout and "CompressedSamples" not in result.stdout


def test_inspect_text_output() -> None:
    result = runner.invoke(dicom_cli, ["inspect", str(corpus_file("RG1_UNCR.dcm"))])
    assert result.exit_code == 0
    assert "model image: eligible" in result.stdout
    assert "warning: (0028,0030) 'PixelSpacing'" in result.stdout
    assert "selection (frontal-chest-radiograph): chosen" in result.stdout


def test_inspect_broken_file_clear_error_nonzero_exit_no_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(corpus_file("RG1_UNCR.dcm").read_bytes()[:5000])
    good = corpus_file("CT_small.dcm")
    result = runner.invoke(dicom_cli, ["inspect", str(broken), str(good)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f"{broken}: error:" in result.stderr
    assert "(7FE0,0010)" in result.stderr and "truncated" in result.stderr
    assert "CT_small.dcm" in result.stdout  # the good file is still reported


def test_inspect_non_dicom_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    result = runner.invoke(dicom_cli, ["inspect", "--json", str(text)])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["files"][0]["error"]["type"] == "NotDicomError"
    assert doc["selection"] is None


def test_render_writes_the_display_png(tmp_path: Path) -> None:
    out = tmp_path / "rg1.png"
    result = runner.invoke(dicom_cli, ["render", str(corpus_file("RG1_J2KR.dcm")), str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as png:
        assert png.mode == "L" and png.size == (1841, 1955)
        pixels = np.asarray(png)
    assert (
        pixels[500:1000, 850:950].mean() > pixels[500:800, 370:640].mean() + 40
    )  # mediastinum > lung


def test_render_synthetic_dx_from_a_file(tmp_path: Path) -> None:
    src = tmp_path / "dx.dcm"
    src.write_bytes(make_dx())
    result = runner.invoke(dicom_cli, ["render", str(src), str(tmp_path / "dx.png")])
    assert result.exit_code == 0
    assert "warning: pixel spacing from (0018,1164)" in result.stderr


def test_render_structured_report_fails_cleanly(tmp_path: Path) -> None:
    result = runner.invoke(
        dicom_cli, ["render", str(corpus_file("test-SR.dcm")), str(tmp_path / "x.png")]
    )
    assert result.exit_code == 1
    assert "not an image" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.png").exists()
