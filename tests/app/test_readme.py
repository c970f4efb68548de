"""The README stays true: every setting is documented, and the two quick-start commands exist."""

from __future__ import annotations

from pathlib import Path

from app.settings import known_variables

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in sorted(known_variables()) if name not in README]
    assert not missing, f"document these in README.md's configuration table: {missing}"


def test_quick_start_commands() -> None:
    assert "bash scripts/setup.sh && .venv/bin/radcheck demo && .venv/bin/radcheck serve" in README
    assert "bash scripts/test.sh" in README
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
