"""The ``radcheck`` command line (Typer). Sub-command groups live in sibling modules."""

from __future__ import annotations

from app.cli.main import cli, main

__all__ = ["cli", "main"]
