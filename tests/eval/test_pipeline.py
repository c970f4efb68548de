"""``run`` and ``compare`` end to end on the synthetic corpus; dataset validation messages."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from eval.cli import cli
from eval.errors import DatasetError
from eval.records import LabelledRow
from eval.runners import HttpRunner
from medvlm.taxonomy import ComplexClass
from tests.eval.conftest import SYNTHETIC, write_reports_jsonl


def _run(corpus: Path, out: Path, seed: int) -> None:
    result = CliRunner().invoke(
        cli,
        ["run", "--corpus", "jsonl", "--corpus-path", str(corpus), "--n", "6", "--seed",
         str(seed), "--out", str(out), "--no-progress", "--bootstrap", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_run_twice_is_byte_identical_and_compare_reports_differences(tmp_path: Path) -> None:
    corpus = write_reports_jsonl(tmp_path / "corpus.jsonl", SYNTHETIC)
    _run(corpus, tmp_path / "a", 0)
    _run(corpus, tmp_path / "b", 0)
    _run(corpus, tmp_path / "c", 5)
    for name in ("dataset.jsonl", "predictions.jsonl", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len((tmp_path / "a" / "dataset.jsonl").read_text().splitlines()) == 6
    result = CliRunner().invoke(
        cli,
        ["compare", str(tmp_path / "a" / "metrics.json"), str(tmp_path / "c" / "metrics.json"),
         "--out", str(tmp_path / "diff.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "simple.accuracy" in result.output
    diff = json.loads((tmp_path / "diff.json").read_text())
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    acc = diff["metrics"]["simple.accuracy"]
    assert acc["a"] == a["simple"]["accuracy"]["value"]
    assert acc["b"] == c["simple"]["accuracy"]["value"]
    assert acc["abs_diff"] == round(acc["b"] - acc["a"], 6)


def test_run_without_a_corpus_path_for_csv_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "--corpus", "csv", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--corpus-path is required" in result.output


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"findings": "x."}, "missing or empty 'id'"),
        ({"id": "1", "label_simple": "Y", "label_complex": "insert"}, "neither 'findings' nor"),
        ({"id": "1", "findings": "x.", "label_simple": "yes"}, "label_simple must be 'Y' or 'N'"),
        (
            {"id": "1", "findings": "x.", "label_simple": "Y", "label_complex": "swap"},
            "label_complex must be one of original, insert, remove, substitute",
        ),
        (
            {"id": "1", "findings": "x.", "label_simple": "N", "label_complex": "insert"},
            "contradicts label_complex",
        ),
        (
            {"id": "1", "findings": "x.", "label_simple": "Y", "label_complex": "insert",
             "subtype": "typo"},
            "subtype must be one of",
        ),
        (
            {"id": "1", "findings": "x.", "label_simple": "Y", "label_complex": "insert",
             "sentence_index": -1},
            "sentence_index must be a non-negative integer",
        ),
    ],
)  # fmt: skip
def test_malformed_rows_name_the_problem(row: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        LabelledRow.from_dict(row, "data.jsonl:3")


def test_http_runner_retries_server_errors() -> None:
    answers = iter([503, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        body = {"verdict_simple": "N", "verdict_complex": "original", "flags": []}
        return httpx.Response(status, json=body if status == 200 else {"detail": "busy"})

    runner = HttpRunner(
        "http://radcheck/", "k", client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    row = LabelledRow("1", "N", ComplexClass.ORIGINAL, findings="Clear lungs.")
    assert runner.check(row)["verdict_simple"] == "N"
    assert runner.describe()["url"] == "http://radcheck"
