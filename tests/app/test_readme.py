"""The README stays true: every setting is documented, every command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from app.cli.main import cli
from app.settings import known_variables

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in sorted(known_variables()) if name not in README]
    assert not missing, f"document these in README.md's configuration table: {missing}"


def test_every_command_in_the_readme_exists() -> None:
    root = typer.main.get_command(cli)
    wrong = []
    for name, sub in set(
        re.findall(r"\bradcheck ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?", README)
    ):
        command = getattr(root, "commands", {}).get(name)
        subcommands = getattr(command, "commands", None)
        if command is None or (subcommands is not None and sub not in subcommands):
            wrong.append(f"radcheck {name} {sub}".strip())
    scripts = set(re.findall(r"\bbash (scripts/[\w.-]+)", README))
    wrong += [script for script in sorted(scripts) if not (ROOT / script).is_file()]
    assert scripts and not wrong, f"README.md names commands that do not exist: {wrong}"
