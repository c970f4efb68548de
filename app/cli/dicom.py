"""``radcheck dicom ...``: inspect and render DICOM files (issue 3)."""

from __future__ import annotations

import typer

dicom_cli = typer.Typer(help="Inspect DICOM files and render the image the model sees.", no_args_is_help=True)
