"""``radcheck``: serve the API, run workers, manage the database and API keys, run the demo."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from app.cli.audit import audit_cli
from app.cli.backup import register as register_backup
from app.cli.check import register as register_check
from app.cli.dicom import dicom_cli
from app.cli.hl7 import hl7_cli
from app.cli.model import model_cli
from app.cli.pacs import pacs_cli
from app.cli.people import user_cli
from app.settings import Settings, SettingsError, load_settings

__all__ = ["cli", "main"]

logger = logging.getLogger("radcheck")

cli = typer.Typer(
    name="radcheck",
    help="RadCheck: catches errors in chest X-ray reports (research software: AI output must be "
    "reviewed by a radiologist).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
apikey_cli = typer.Typer(help="API keys (stored hashed; shown once).", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(apikey_cli, name="apikey")
cli.add_typer(dicom_cli, name="dicom")
cli.add_typer(model_cli, name="model")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(user_cli, name="user")
cli.add_typer(hl7_cli, name="hl7")
cli.add_typer(pacs_cli, name="pacs")
register_check(cli)
register_backup(cli)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"radcheck: {message}", err=True)
    raise typer.Exit(code)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pydicom may log element values (PHI) for non-conformant files; SQLAlchemy's engine logger
    # would log statements. Keep both quiet whatever the level.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    # python-hl7 logs the whole field (report text) when it meets an unknown escape sequence.
    logging.getLogger("hl7").setLevel(logging.CRITICAL + 1)


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    return settings


def _upgrade(settings: Settings) -> None:
    from app.db.migrate import upgrade

    settings.storage.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade(settings.database_url)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (RADCHECK_API__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RADCHECK_API__PORT)")] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Upgrade the database schema before serving")
    ] = False,
    worker: Annotated[
        bool | None,
        typer.Option("--worker/--no-worker", help="Run a check worker in-process"),
    ] = None,
    ui: Annotated[
        bool,
        typer.Option("--ui/--no-ui", help="Also start the dashboard (RADCHECK_UI__HOST/PORT)"),
    ] = True,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="API processes sharing the port (RADCHECK_API__PROCESSES)"
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (with an in-process check worker on the embedded default) and the dashboard."""
    import uvicorn

    from app.api import create_app
    from app.api.connections import guarded_protocol
    from app.cli.serving import connection_limits, worker_command
    from app.cli.ui import default_api_url, port_free, start_child, start_dashboard
    from app.db.migrate import SchemaOutdatedError

    settings = settings_or_exit()
    if migrate:
        _upgrade(settings)
    n_processes = processes or settings.api.processes
    try:
        # With several processes this one only supervises; building the app here still checks
        # the schema (and the model configuration) before any of them starts.
        app = create_app(settings, run_worker=worker if n_processes == 1 else False)
    except SchemaOutdatedError as exc:
        fail(str(exc))
    children = []
    if n_processes > 1 and (settings.worker.in_process if worker is None else worker):
        children.append(start_child(worker_command()))
        logger.info("check worker started as its own process (--processes %d)", n_processes)
    dashboard = None
    if ui:
        ui_host, ui_port = settings.ui.host, settings.ui.port
        if port_free(ui_host, ui_port):
            dashboard = start_dashboard(ui_host, ui_port, default_api_url(settings, host, port))
            logger.info(
                "dashboard on http://%s:%d (radcheck user create to log in)", ui_host, ui_port
            )
        else:
            logger.warning(
                "dashboard not started: %s:%d is in use (set RADCHECK_UI__PORT or use --no-ui)",
                ui_host,
                ui_port,
            )
    if dashboard is not None:
        children.append(dashboard)
    bind_host, bind_port = host or settings.api.host, port or settings.api.port
    try:
        if n_processes == 1:
            uvicorn.run(
                app,
                host=bind_host,
                port=bind_port,
                log_level=settings.log_level.lower(),
                access_log=False,
                http=guarded_protocol(connection_limits(settings)),
            )
        else:
            uvicorn.run(
                "app.cli.serving:api_process",
                factory=True,
                workers=n_processes,
                host=bind_host,
                port=bind_port,
                log_level=settings.log_level.lower(),
                access_log=False,
                http="app.cli.serving:SharedPortProtocol",
            )
    finally:
        for child in children:
            child.terminate()
            try:
                child.wait(timeout=10)
            except Exception:  # noqa: BLE001 - the child is stopped either way
                child.kill()


@cli.command("ui")
def ui_command(
    host: Annotated[str | None, typer.Option(help="Bind address (RADCHECK_UI__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (RADCHECK_UI__PORT)")] = None,
    api_url: Annotated[
        str | None, typer.Option(help="The RadCheck API (RADCHECK_UI__API_URL)")
    ] = None,
) -> None:
    """Serve the radiologists' dashboard (Streamlit) against a RadCheck API."""
    from app.cli.ui import default_api_url, start_dashboard

    settings = settings_or_exit()
    proc = start_dashboard(
        host or settings.ui.host, port or settings.ui.port, api_url or default_api_url(settings)
    )
    try:
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)


@cli.command("worker")
def worker_command(
    once: Annotated[bool, typer.Option(help="Process at most one job, then exit")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Health check: exit 0 if a worker on this host heart-beat recently"
        ),
    ] = False,
) -> None:
    """Run a standalone check worker (one per GPU)."""
    from app.db.migrate import SchemaOutdatedError, ensure_current
    from app.db.session import Database
    from app.services.factory import build_pipeline
    from app.services.ingest import decode_limits
    from app.worker.runner import Worker

    settings = settings_or_exit()
    db = Database(settings.database_url, pool_size=2)
    if check:
        import socket
        from datetime import timedelta

        from app.services.heartbeats import worker_alive

        with db.session() as session:
            alive = worker_alive(
                session,
                within=timedelta(seconds=settings.worker.alive_after_s),
                hostname=socket.gethostname(),
            )
        db.dispose()
        if not alive:
            fail("no worker on this host heart-beat recently", code=1)
        typer.echo("worker alive")
        return
    try:
        ensure_current(db.engine, db.url)
    except SchemaOutdatedError as exc:
        fail(str(exc))
    worker = Worker(
        db,
        lambda: build_pipeline(settings),
        files_dir=settings.files_dir,
        lease_s=settings.worker.lease_s,
        poll_interval_s=settings.worker.poll_interval_s,
        quiet_period_s=settings.ingest.quiet_period_s,
        max_attempts=settings.worker.max_attempts,
        export=settings.export,
        pacs=settings.pacs,
        limits=decode_limits(settings),
    )
    try:
        worker.pipeline  # noqa: B018 - load the checker and model now: a bad config fails here
    except Exception as exc:  # noqa: BLE001 - reported as one line, not a traceback
        fail(f"cannot build the check pipeline: {type(exc).__name__}: {exc}")

    def _stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %s: stopping after the current job", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.beat()
    worker.complete_quiet_studies()
    if once:
        worker.run_once()
    else:
        worker.run_forever()
    db.dispose()


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = settings_or_exit()
    from app.db.migrate import upgrade

    settings.storage.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade(settings.database_url, revision)
    typer.echo(f"database upgraded to {revision}")


@db_cli.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target, e.g. -1 or base")]) -> None:
    """Revert migrations down to REVISION."""
    settings = settings_or_exit()
    from app.db.migrate import downgrade

    downgrade(settings.database_url, revision)
    typer.echo(f"database downgraded to {revision}")


@db_cli.command("current")
def db_current() -> None:
    """Show the database's schema revision and the code's."""
    settings = settings_or_exit()
    from app.db.migrate import current_revision, head_revision
    from app.db.session import Database

    db = Database(settings.database_url)
    typer.echo(f"database: {current_revision(db.engine) or 'none'}")
    typer.echo(f"code:     {head_revision(db.url)}")
    db.dispose()


@apikey_cli.command("create")
def apikey_create(
    role: Annotated[str, typer.Option(help="admin, integration or radiologist")],
    name: Annotated[str, typer.Option(help="Who uses the key, e.g. 'ris-gateway'")],
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    settings = settings_or_exit()
    from app.db.migrate import SchemaOutdatedError, ensure_current
    from app.db.session import Database
    from app.services import audit
    from app.services.auth import create_api_key
    from app.services.errors import ServiceError

    db = Database(settings.database_url)
    try:
        ensure_current(db.engine, db.url)
        with db.session() as session:
            row, plaintext = create_api_key(session, name=name, role=role)
            audit.record(
                session,
                actor="cli",
                action="apikey.created",
                object_type="api_key",
                object_id=row.id,
                details={"name": name, "role": role},
            )
    except (ServiceError, SchemaOutdatedError) as exc:
        fail(str(exc))
    finally:
        db.dispose()
    typer.echo(plaintext)
    typer.echo(f"(API key {name!r}, role {role}: store it now, it is not shown again)", err=True)


@apikey_cli.command("list")
def apikey_list() -> None:
    """List API keys (names, roles, last use; never the keys)."""
    settings = settings_or_exit()
    from app.db.session import Database
    from app.services.auth import list_api_keys

    db = Database(settings.database_url)
    with db.session() as session:
        for row in list_api_keys(session):
            state = "revoked" if row.revoked_at else "active"
            typer.echo(
                f"{row.name}\t{row.role}\t{state}\tcreated {row.created_at:%Y-%m-%d}\t"
                f"last used {row.last_used_at or '-'}"
            )
    db.dispose()


@apikey_cli.command("revoke")
def apikey_revoke(name: Annotated[str, typer.Option(help="The key's name")]) -> None:
    """Revoke an API key."""
    settings = settings_or_exit()
    from app.db.session import Database
    from app.services import audit
    from app.services.auth import revoke_api_key
    from app.services.errors import ServiceError

    db = Database(settings.database_url)
    try:
        with db.session() as session:
            row = revoke_api_key(session, name)
            audit.record(
                session,
                actor="cli",
                action="apikey.revoked",
                object_type="api_key",
                object_id=row.id,
            )
    except ServiceError as exc:
        fail(str(exc))
    finally:
        db.dispose()
    typer.echo(f"revoked {name}")


@cli.command()
def demo(
    dicom: Annotated[
        Path | None, typer.Option(help="A chest radiograph (default: pydicom-data's RG1_UNCR.dcm)")
    ] = None,
) -> None:
    """Load a sample study and report, check it, and print the flags (creates the schema if needed)."""
    settings = settings_or_exit()
    _upgrade(settings)
    from app.cli.demo import run_demo

    try:
        summary = run_demo(settings, dicom)
    except FileNotFoundError as exc:
        fail(str(exc))
    typer.echo(json.dumps(summary, indent=2, default=str))


def main() -> None:
    cli()
