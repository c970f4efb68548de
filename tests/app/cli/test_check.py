"""``radcheck check-report``: JSON and JSONL in, results out, clear errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from app.cli.check import register

REPORT = {
    "id": "r1",
    "findings": "Heart size is normal. Small left pneumothorax.",
    "impression": "Small right pneumothorax.",
    "header": {"patient_sex": "F", "view_position": "PA"},
}


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root (keeps check-report a sub-command, as in radcheck)."""

    register(app)
    return app


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_single_report_from_stdin(cli: typer.Typer, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check-report", "-"], input=json.dumps(REPORT))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["id"] == "r1" and out["verdict_simple"] == "Y"
    flag = out["flags"][0]
    assert (flag["subtype"], flag["section"], flag["sentence_index"]) == (
        "laterality",
        "findings",
        1,
    )
    assert (
        flag["severity"] == "critical"
        and flag["evidence"]["contradicts"]["section"] == "impression"
    )


def test_raw_text_from_a_file(cli: typer.Typer, runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"text": "FINDINGS: Lungs are clear.\nIMPRESSION: Normal chest."}))
    result = runner.invoke(cli, ["check-report", str(path), "--pretty"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["id"] is None and out["verdict_simple"] == "N" and out["flags"] == []


def test_batch_jsonl_one_line_per_input_line(
    cli: typer.Typer, runner: CliRunner, tmp_path: Path
) -> None:
    lines = [
        json.dumps(REPORT),
        "",
        json.dumps({"id": "r2", "findings": "No pneumothorax.", "impression": "No acute disease."}),
    ]
    out_path = tmp_path / "out.jsonl"
    result = runner.invoke(
        cli, ["check-report", "--batch", "-o", str(out_path)], input="\n".join(lines) + "\n"
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [(r["id"], r["verdict_simple"]) for r in records] == [("r1", "Y"), ("r2", "N")]


def test_batch_bad_lines_get_error_lines_and_exit_1(cli: typer.Typer, runner: CliRunner) -> None:
    lines = [
        json.dumps(REPORT),
        "{not json",
        json.dumps({"id": "r3", "findings": 7}),
        json.dumps({"id": "r4", "findings": "Clear.", "header": {"sex": "Q"}}),
    ]
    result = runner.invoke(cli, ["check-report", "--batch"], input="\n".join(lines))
    assert result.exit_code == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["r1", None, "r3", "r4"]
    assert "invalid JSON" in records[1]["error"]
    assert "'findings' must be a string" in records[2]["error"]
    assert "patient_sex" in records[3]["error"]
    assert "3 input line(s) could not be checked" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{oops", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"findings": "x", "colour": 1}), "unknown field"),
        (
            json.dumps({"text": "x", "findings": "y"}),
            "either 'text' (the raw report) or the section fields",
        ),
        (json.dumps({"id": 1}), "neither 'findings' nor 'impression' nor 'text'"),
        (json.dumps({"findings": "Clear.", "header": {"age": "old"}}), "patient_age_years"),
    ],
)
def test_bad_input_is_a_clear_error(
    cli: typer.Typer, runner: CliRunner, payload: str, message: str
) -> None:
    result = runner.invoke(cli, ["check-report"], input=payload)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_file(cli: typer.Typer, runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["check-report", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
