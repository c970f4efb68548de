"""``python -m eval --help`` documents every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from eval.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eval", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("inject", "score", "run", "compare"):
        assert command in result.stdout


def test_each_command_has_help() -> None:
    runner = CliRunner()
    for command, option in (
        ("inject", "--p-original"),
        ("score", "--dataset"),
        ("run", "--corpus-path"),
        ("compare", "baseline"),
    ):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert option in result.output


def test_bad_arguments_exit_with_a_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    )
    assert result.exit_code == 2
    assert "not found; pass two metrics.json files" in result.output
