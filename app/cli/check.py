"""``radcheck check-report``: check report text without the service (issue 5)."""

from __future__ import annotations

import typer


def register(cli: typer.Typer) -> None:
    """Add the ``check-report`` command to the top-level CLI."""
