"""The done-when check on the real IU X-ray reports (skips without ../shared): 1,000 reports with
seed 0, twice, give byte-identical dataset and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eval.cli import cli
from tests.eval.conftest import IU_TGZ

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not IU_TGZ.is_file(), reason="needs ../shared/data/iu_xray"),
]


def _run(out: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["run", "--corpus", "iu", "--corpus-path", str(IU_TGZ), "--n", "1000", "--seed", "0",
         "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_iu_1000_seed0_twice_is_byte_identical(tmp_path: Path) -> None:
    _run(tmp_path / "a")
    _run(tmp_path / "b")
    for name in ("dataset.jsonl", "metrics.json", "predictions.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    rows = [json.loads(x) for x in (tmp_path / "a" / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 1000
    errors = sum(r["label_simple"] == "Y" for r in rows)
    assert 400 < errors < 600  # 50% originals by default
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["n_rows"] == 1000
    assert (tmp_path / "a" / "report.md").is_file()
