"""``radcheck dicom ...``: inspect and render DICOM files (issue 3).

Errors are reported as one line per file on stderr with a non-zero exit code, never a traceback:
1 when a file is not usable DICOM (the package's own error), 2 for an internal error (a bug).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

import dicom_io

dicom_cli = typer.Typer(
    help="Inspect DICOM files and render the image the model sees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

EXIT_DICOM_ERROR = 1
EXIT_INTERNAL_ERROR = 2


def _error(path: Path, exc: BaseException, *, internal: bool) -> dict[str, Any]:
    kind = "internal error (please report)" if internal else "error"
    return {
        "path": str(path),
        "ok": False,
        "error": {"type": type(exc).__name__, "kind": kind, "message": str(exc)},
    }


def _inspect_one(
    path: Path, *, pixels: bool
) -> tuple[dict[str, Any], dicom_io.DicomInstance | None]:
    try:
        if pixels:
            instance, rendered = dicom_io.read_and_render(path)
        else:
            instance, rendered = dicom_io.read_instance(path), None
    except dicom_io.DicomIOError as exc:
        return _error(path, exc, internal=False), None
    except Exception as exc:  # noqa: BLE001 - the CLI reports bugs as one line, never a traceback
        return _error(path, exc, internal=True), None
    entry: dict[str, Any] = {"path": str(path), "ok": True, "instance": instance.to_dict()}
    if rendered is not None:
        entry["pixels"] = rendered.stats()
        entry["render"] = {"steps": list(rendered.steps), "warnings": list(rendered.warnings)}
    return entry, instance


def _text_report(entries: list[dict[str, Any]], decision: dict[str, Any] | None) -> None:
    for entry in entries:
        if not entry["ok"]:
            continue
        inst = entry["instance"]
        header = inst["header"]
        typer.echo(f"{entry['path']}")
        typer.echo(
            f"  kind: {inst['kind']}  modality: {inst['modality']}  sop: {inst['sop_instance_uid']}"
        )
        typer.echo(f"  transfer syntax: {inst['transfer_syntax_uid']}")
        facts = ", ".join(f"{k}={v}" for k, v in header.items() if v is not None)
        typer.echo(f"  header: {facts}")
        elig = inst["eligibility"]
        verdict = "eligible" if elig["eligible"] else "not eligible: " + "; ".join(elig["reasons"])
        typer.echo(f"  model image: {verdict}")
        if "pixels" in entry:
            stats = entry["pixels"]
            typer.echo("  pixels: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
            for warning in entry["render"]["warnings"]:
                typer.echo(f"  warning: {warning}")
    if decision is not None:
        typer.echo(f"selection ({decision['rules']['name']}): chosen {decision['chosen']}")
        for reason in decision["reasons"]:
            mark = "*" if reason["chosen"] else "-"
            typer.echo(f"  {mark} {reason['sop_instance_uid']}: {reason['reason']}")


@dicom_cli.command("inspect")
def inspect(
    files: Annotated[
        list[Path], typer.Argument(help="DICOM files to inspect (one study or more).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    pixels: Annotated[
        bool,
        typer.Option(
            "--pixels/--header-only", help="Decode and render to report pixel statistics."
        ),
    ] = True,
) -> None:
    """Header facts, eligibility, the series-selection decision over FILES, and pixel statistics."""
    entries: list[dict[str, Any]] = []
    candidates: list[dicom_io.SelectionCandidate] = []
    for path in files:
        entry, instance = _inspect_one(path, pixels=pixels)
        entries.append(entry)
        if instance is not None:
            candidates.append(dicom_io.SelectionCandidate.from_instance(instance))
    decision = dicom_io.select_image(candidates).to_dict() if candidates else None
    if as_json:
        typer.echo(json.dumps({"files": entries, "selection": decision}, indent=2, default=str))
    else:
        _text_report(entries, decision)
    failed = [e for e in entries if not e["ok"]]
    for entry in failed:
        error = entry["error"]
        typer.echo(
            f"radcheck dicom: {entry['path']}: {error['kind']}: {error['message']}", err=True
        )
    if any(e["error"]["kind"] != "error" for e in failed):
        raise typer.Exit(EXIT_INTERNAL_ERROR)
    if failed:
        raise typer.Exit(EXIT_DICOM_ERROR)


@dicom_cli.command("render")
def render(
    file: Annotated[Path, typer.Argument(help="The DICOM image to render.")],
    out: Annotated[Path, typer.Argument(help="Where to write the 8-bit PNG.")],
) -> None:
    """Write the display image the model sees (windowed, MONOCHROME1 inverted) as a PNG."""
    from PIL import Image

    try:
        rendered = dicom_io.render(file)
    except dicom_io.DicomIOError as exc:
        typer.echo(f"radcheck dicom: {file}: error: {exc}", err=True)
        raise typer.Exit(EXIT_DICOM_ERROR) from None
    try:
        Image.fromarray(rendered.display, mode="L").save(out, format="PNG")
    except OSError as exc:
        typer.echo(f"radcheck dicom: cannot write {out}: {exc}", err=True)
        raise typer.Exit(EXIT_DICOM_ERROR) from None
    for warning in rendered.warnings:
        typer.echo(f"warning: {warning}", err=True)
    stats = rendered.stats()
    typer.echo(f"wrote {out} ({stats['columns']}x{stats['rows']}, mean {stats['mean']})")


@dicom_cli.command("listen")
def listen(
    host: Annotated[str | None, typer.Option(help="Bind address (RADCHECK_LISTENER__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RADCHECK_LISTENER__PORT)")] = None,
    ae_title: Annotated[
        str | None, typer.Option("--ae-title", help="Called AE title (RADCHECK_LISTENER__AE_TITLE)")
    ] = None,
) -> None:
    """A DICOM C-STORE listener (C-ECHO, every storage SOP class): each instance is stored
    durably through the ingest service before it is acknowledged. SIGTERM drains: stop
    accepting, let running associations finish (RADCHECK_LISTENER__DRAIN_S), exit."""
    import signal
    import threading

    from app.cli.main import fail, settings_or_exit
    from app.db.migrate import SchemaOutdatedError, ensure_current
    from app.db.session import Database
    from app.services.dimse_intake import DimseIntake
    from app.services.ingest import decode_limits
    from app.services.storage import ContentStore
    from dicom_io.net import ListenerConfig, StoreListener

    settings = settings_or_exit()
    conf = settings.listener
    if not conf.allowed_calling_aes:
        typer.echo(
            "radcheck dicom listen: warning: RADCHECK_LISTENER__ALLOWED_CALLING_AES is empty, "
            "every association is refused (set e.g. '[\"ORTHANC\"]').",
            err=True,
        )
    db = Database(settings.database_url, pool_size=settings.database.pool_size)
    try:
        ensure_current(db.engine, db.url)
    except SchemaOutdatedError as exc:
        fail(str(exc))
    intake = DimseIntake(
        db,
        ContentStore(settings.files_dir),
        conf.min_free_bytes,
        decode_limits(settings),
    )
    listener = StoreListener(
        ListenerConfig(
            ae_title=ae_title or conf.ae_title,
            host=host or conf.host,
            port=conf.port if port is None else port,
            allowed_calling_aes=tuple(conf.allowed_calling_aes),
            allowed_peers=tuple(conf.allowed_peers),
            max_associations=conf.max_associations,
        ),
        on_store=intake.store_instance,
        on_reject=intake.rejected,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    try:
        listener.start()
    except OSError as exc:
        db.dispose()
        fail(f"cannot listen on {listener.config.host}:{listener.config.port}: {exc}")
    typer.echo(
        f"radcheck dicom listen: {listener.config.ae_title} on "
        f"{listener.config.host}:{listener.port}",
        err=True,
    )
    try:
        stop.wait()
        aborted = listener.drain(conf.drain_s)
        typer.echo(f"radcheck dicom listen: stopped ({aborted} association(s) aborted)", err=True)
    finally:
        db.dispose()
