"""``radcheck audit verify|export``: check the audit trail's hash chain; export it for an auditor."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["audit_cli"]

audit_cli = typer.Typer(
    help="The tamper-evident audit trail: verify its hash chain, export it (IHE ATNA event kinds).",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"radcheck: {message}", err=True)
    return typer.Exit(code)


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(
            f"{option} {value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+00:00]"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@audit_cli.command("verify")
def verify() -> None:
    """Recompute the hash chain: exit 0 if intact, 1 naming each edited, deleted or missing row."""
    from app.cli.main import settings_or_exit
    from app.db.session import Database
    from app.services.audit_trail import verify_chain

    db = Database(settings_or_exit().database_url, pool_size=1)
    try:
        with db.session() as session:
            report = verify_chain(session)
    finally:
        db.dispose()
    if not report.intact:
        for problem in report.problems:
            typer.echo(f"TAMPERED: {problem}")
        raise _fail(
            f"audit chain broken: {len(report.problems)} problem(s) in {report.rows} rows", 1
        )
    typer.echo(f"audit chain intact: {report.rows} rows")


@audit_cli.command("export")
def export(
    since: Annotated[
        str | None, typer.Option("--from", help="From this date/time (UTC), inclusive")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="Up to this date/time, exclusive")
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="Only this actor, e.g. 'apikey:ris-gateway'")
    ] = None,
    study: Annotated[str | None, typer.Option(help="Only this StudyInstanceUID")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    out: Annotated[Path | None, typer.Option(help="Write here (default: standard output)")] = None,
) -> None:
    """Export audit events with their IHE ATNA event id and name; the export itself is audited."""
    from app.cli.main import settings_or_exit
    from app.db.session import Database
    from app.services import audit
    from app.services.audit_trail import export_events
    from app.services.errors import ServiceError

    start, end = _when(since, "--from"), _when(until, "--to")
    db = Database(settings_or_exit().database_url, pool_size=1)
    try:
        with db.session() as session:
            if out is None:
                count = export_events(
                    session,
                    sys.stdout,
                    fmt=fmt,
                    since=start,
                    until=end,
                    actor=user,
                    study_uid=study,
                )
            else:
                with out.open("w", encoding="utf-8", newline="") as handle:
                    count = export_events(
                        session,
                        handle,
                        fmt=fmt,
                        since=start,
                        until=end,
                        actor=user,
                        study_uid=study,
                    )
        with db.session() as session:
            audit.record(
                session,
                actor="cli",
                action="audit.exported",
                object_type="audit_events",
                details={
                    "count": count,
                    "format": fmt,
                    "from": since,
                    "to": until,
                    "user": user,
                    "study_filter": study is not None,
                },
            )
    except ServiceError as exc:
        raise _fail(str(exc)) from exc
    finally:
        db.dispose()
    typer.echo(f"exported {count} audit events", err=True)
