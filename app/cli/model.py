"""``radcheck model ...``: convert, create, run and serve model checkpoints (issue 4)."""

from __future__ import annotations

import typer

model_cli = typer.Typer(help="Convert, create, run and serve model checkpoints.", no_args_is_help=True)
