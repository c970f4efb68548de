"""``radcheck hl7 ...``: the HL7 v2 report listener, file import and a small MLLP sender (issue 15)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["hl7_cli", "split_messages"]

hl7_cli = typer.Typer(
    help="Reports from the RIS as HL7 v2 ORU^R01: listen (MLLP), import files, send.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_FRAME = re.compile(rb"\x0b(.*?)\x1c\x0d?", re.DOTALL)
_MSH_START = re.compile(rb"(?:^|\r)(?=MSH[^\r\w])")
_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_messages(data: bytes) -> list[bytes]:
    """The messages in an export file: MLLP frames, or plain text with one MSH per message (CR, LF
    or CRLF segment ends; FHS/BHS batch envelopes are dropped)."""
    if b"\x0b" in data:
        return [m.strip(b"\r\n") + b"\r" for m in _FRAME.findall(data) if m.strip()]
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    segments = [s for s in text.split(b"\r") if s.strip() and s[:3] not in _BATCH_SEGMENTS]
    messages: list[list[bytes]] = []
    for seg in segments:
        if seg.startswith(b"MSH") or not messages:
            messages.append([seg])
        else:
            messages[-1].append(seg)
    return [b"\r".join(m) + b"\r" for m in messages]


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.parts)
            )
        else:
            yield path


@hl7_cli.command("listen")
def listen(
    host: Annotated[str | None, typer.Option(help="Bind address (RADCHECK_HL7__HOST)")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (RADCHECK_HL7__PORT; 0 picks a free one)")
    ] = None,
) -> None:
    """Receive ORU^R01 reports over MLLP; each is acknowledged once it is stored."""
    from app.cli.main import fail, settings_or_exit
    from app.db.migrate import SchemaOutdatedError, ensure_current
    from app.db.session import Database
    from app.hl7 import Hl7Listener, ListenerConfig
    from app.services.report_intake import Intake, IntakeConfig

    settings = settings_or_exit()
    conf = settings.hl7
    db = Database(settings.database_url, pool_size=settings.database.pool_size)
    try:
        ensure_current(db.engine, db.url)
    except SchemaOutdatedError as exc:
        fail(str(exc))
    intake = IntakeConfig(
        accession_field=conf.accession_field,
        max_attempts=settings.worker.max_attempts,
        application=conf.application,
        max_report_chars=settings.checks.max_report_chars,
    )
    listener = Hl7Listener(
        Intake(db, intake, source="mllp"),
        ListenerConfig(
            host=host or conf.host,
            port=conf.port if port is None else port,
            allowed_peers=tuple(conf.allowed_peers),
            max_message_bytes=conf.max_message_bytes,
            idle_timeout_s=conf.idle_timeout_s,
            application=conf.application,
        ),
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await listener.start()
        except OSError as exc:
            fail(f"cannot listen on {listener.config.host}:{listener.config.port}: {exc}")
        await stop.wait()
        await listener.close()

    try:
        asyncio.run(run())
    finally:
        db.dispose()


@hl7_cli.command("import")
def import_files(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of ORU^R01 messages")],
) -> None:
    """Replay exported ORU^R01 messages through the same intake as the listener.

    Prints one JSON line per message (file, index, ACK code, outcome, reason); exits 1 when any
    message was rejected or not stored.
    """
    from app.cli.main import fail, settings_or_exit
    from app.db.migrate import SchemaOutdatedError, ensure_current
    from app.db.session import Database
    from app.services.report_intake import Intake, IntakeConfig

    settings = settings_or_exit()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    db = Database(settings.database_url)
    try:
        ensure_current(db.engine, db.url)
    except SchemaOutdatedError as exc:
        fail(str(exc))
    receive = Intake(
        db,
        IntakeConfig(
            accession_field=settings.hl7.accession_field,
            max_attempts=settings.worker.max_attempts,
            application=settings.hl7.application,
            max_report_chars=settings.checks.max_report_chars,
        ),
        source="file",
    )
    failed = 0
    try:
        for path in _files(paths):
            messages = split_messages(path.read_bytes())
            if not messages:
                failed += 1
                typer.echo(json.dumps({"file": str(path), "ack": None, "outcome": "no messages"}))
                continue
            for index, data in enumerate(messages, start=1):
                result = receive(data)
                failed += result.code.value != "AA"
                typer.echo(
                    json.dumps(
                        {
                            "file": str(path),
                            "message": index,
                            "control_id": result.header.control_id if result.header else None,
                            "ack": result.code.value,
                            "outcome": result.outcome,
                            "detail": result.text,
                        }
                    )
                )
    finally:
        db.dispose()
    if failed:
        raise typer.Exit(1)


@hl7_cli.command("send")
def send(
    paths: Annotated[list[Path], typer.Argument(help="Files of HL7 messages to send")],
    host: Annotated[str, typer.Option(help="Listener host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listener port")] = 2575,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK")] = 30.0,
) -> None:
    """Send messages over MLLP (one connection) and print each ACK's MSA line."""
    from hl7.mllp import open_hl7_connection

    from app.cli.main import fail

    messages = [m for path in paths for m in split_messages(path.read_bytes())]
    if not messages:
        fail("no HL7 messages in the given files")

    async def run() -> int:
        reader, writer = await asyncio.wait_for(open_hl7_connection(host, port), timeout)
        rejected = 0
        try:
            for data in messages:
                writer.writeblock(data)
                await writer.drain()
                ack = await asyncio.wait_for(reader.readblock(), timeout)
                segments = ack.decode("utf-8", "replace").split("\r")
                msa = next((s for s in segments if s.startswith("MSA")), "MSA|?")
                typer.echo(msa)
                rejected += not msa.startswith("MSA|AA")
        finally:
            writer.close()
        return rejected

    try:
        rejected = asyncio.run(run())
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        fail(f"cannot send to {host}:{port}: {type(exc).__name__}: {exc}")
    if rejected:
        raise typer.Exit(1)
