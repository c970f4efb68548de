"""``radcheck check-report``: check report text without the service (issue 5).

Input is one JSON object (a file or ``-`` for stdin)::

    {"id": "r1", "findings": "...", "impression": "...", "indication": "...", "comparison": "...",
     "technique": "...", "header": {"patient_sex": "F", "view_position": "PA"}}

or ``{"text": "<raw report>"}`` for a whole report with headers (IU or MIMIC style): the report
fields and rule of ``POST /api/v1/check-report`` (``medvlm.reports.ReportInput``). Output is the
check result as JSON (flags with evidence, SIMPLE verdict and COMPLEX class) carrying the input's
``id``. With ``--batch`` the input is JSONL and the output has one line per non-blank input line; a
bad line gives an ``{"id", "error"}`` line and the command exits 1 after the whole batch. Text and
header rules only: model checks run in the service's check job.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn

import typer

from app.services.headers import checker_facts
from medvlm.checking import Checker, HeaderFacts
from medvlm.errors import MedVLMError
from medvlm.reports import REPORT_FIELDS, ParsedReport, ReportInput, read_report

__all__ = ["CheckInputError", "check_payload", "register"]

_KNOWN_KEYS = frozenset({"id", "header", *REPORT_FIELDS})


class CheckInputError(ValueError):
    """One input object cannot be checked (the message says which field and how to fix it)."""


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"radcheck check-report: {message}", err=True)
    raise typer.Exit(code)


def _parse(checker: Checker, payload: Any) -> tuple[ParsedReport, HeaderFacts | None]:
    if not isinstance(payload, dict):
        raise CheckInputError(f"expected a JSON object, got {type(payload).__name__}")
    unknown = sorted(set(payload) - _KNOWN_KEYS)
    if unknown:
        raise CheckInputError(f"unknown field(s) {unknown}; allowed: {sorted(_KNOWN_KEYS)}")
    # the API's rule (medvlm.reports.ReportInput): text or sections, FINDINGS or IMPRESSION
    report = read_report(ReportInput.from_mapping(payload), checker.parser)
    header_raw = payload.get("header")
    header = None if header_raw is None else checker_facts(header_raw)
    return report, header


def check_payload(checker: Checker, payload: Any) -> dict[str, Any]:
    """Check one input object; raises :class:`CheckInputError` or ``MedVLMError`` on bad input."""
    report, header = _parse(checker, payload)
    result = checker.check(report, header).to_dict()
    out: dict[str, Any] = {"id": payload.get("id")}
    out.update(result)
    return out


def _open(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    p = Path(path)
    if not p.is_file():
        _fail(f"input file {path!r} does not exist; give a JSON file or '-' for stdin")
    return p.open(encoding="utf-8")


def _lines(handle: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(handle, 1):
        if line.strip():
            yield number, line


def register(cli: typer.Typer) -> None:
    """Add the ``check-report`` command to the top-level CLI."""

    @cli.command("check-report")
    def check_report(
        source: Annotated[
            str, typer.Argument(help="JSON file (JSONL with --batch), or '-' for stdin")
        ] = "-",
        batch: Annotated[
            bool, typer.Option("--batch", help="JSONL in, JSONL out (one line per input line)")
        ] = False,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")
        ] = None,
        pretty: Annotated[bool, typer.Option("--pretty", help="Indent single results")] = False,
    ) -> None:
        """Check a report's text (and optional header facts) for internal errors; JSON out."""
        try:
            checker = Checker()
        except MedVLMError as exc:
            _fail(f"cannot build the checker: {exc}")
        out = sys.stdout if output is None else output.open("w", encoding="utf-8")
        try:
            with _open(source) as handle:
                if batch:
                    failures = 0
                    for number, line in _lines(handle):
                        rid: Any = None
                        try:
                            payload = json.loads(line)
                            rid = payload.get("id") if isinstance(payload, dict) else None
                            record = check_payload(checker, payload)
                        except json.JSONDecodeError as exc:
                            failures += 1
                            record = {
                                "id": None,
                                "error": f"line {number}: invalid JSON ({exc.msg})",
                            }
                        except (CheckInputError, MedVLMError) as exc:
                            failures += 1
                            record = {"id": rid, "error": f"line {number}: {exc}"}
                        out.write(json.dumps(record) + "\n")
                    if failures:
                        typer.echo(
                            f"radcheck check-report: {failures} input line(s) could not be checked; "
                            "see their 'error' fields",
                            err=True,
                        )
                        raise typer.Exit(1)
                    return
                raw = handle.read()
            try:
                payload = json.loads(raw)
            except json.JSONDecodeError as exc:
                _fail(
                    f"input is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                    "use --batch for JSONL"
                )
            try:
                record = check_payload(checker, payload)
            except (CheckInputError, MedVLMError) as exc:
                _fail(str(exc))
            out.write(json.dumps(record, indent=2 if pretty else None) + "\n")
        finally:
            if output is not None:
                out.close()
