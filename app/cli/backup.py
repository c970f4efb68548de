"""``radcheck backup DIR`` and ``radcheck restore DIR``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"radcheck: {message}", err=True)
    return typer.Exit(2)


def register(cli: typer.Typer) -> None:
    @cli.command("backup")
    def backup_command(
        folder: Annotated[Path, typer.Argument(help="A new or empty folder for the backup")],
    ) -> None:
        """Back up the database (SQLite online backup or pg_dump) and the file store, with a
        manifest of SHA-256 hashes. Safe while the server runs."""
        from app.cli.main import settings_or_exit
        from app.db.session import Database
        from app.services import audit
        from app.services.backup import backup
        from app.services.errors import ServiceError

        settings = settings_or_exit()
        try:
            result = backup(settings.database_url, settings.files_dir, folder)
        except ServiceError as exc:
            raise _fail(str(exc)) from exc
        except subprocess.CalledProcessError as exc:
            raise _fail(f"pg_dump failed: {exc.stderr.decode(errors='replace')[:500]}") from exc
        db = Database(settings.database_url, pool_size=1)
        with db.session() as session:
            audit.record(
                session,
                actor="cli",
                action="backup.created",
                object_type="backup",
                details={"files": result.files, "bytes": result.bytes, "database": result.database},
            )
        db.dispose()
        typer.echo(
            f"backup written to {folder}: {result.database} database and {result.files} files "
            f"({result.bytes} bytes); manifest.json lists their SHA-256"
        )

    @cli.command("restore")
    def restore_command(
        folder: Annotated[Path, typer.Argument(help="A folder written by `radcheck backup`")],
    ) -> None:
        """Restore a backup into the configured (empty) database and data directory, after
        checking every file against the manifest."""
        from app.cli.main import settings_or_exit
        from app.db.migrate import upgrade
        from app.db.session import Database
        from app.services import audit
        from app.services.backup import restore
        from app.services.errors import ServiceError

        settings = settings_or_exit()
        try:
            manifest = restore(folder, settings.database_url, settings.files_dir)
        except ServiceError as exc:
            raise _fail(str(exc)) from exc
        except subprocess.CalledProcessError as exc:
            raise _fail(f"pg_restore failed: {exc.stderr.decode(errors='replace')[:500]}") from exc
        upgrade(settings.database_url)  # a backup from an older release comes up to date
        db = Database(settings.database_url, pool_size=1)
        with db.session() as session:
            audit.record(
                session,
                actor="cli",
                action="backup.restored",
                object_type="backup",
                details={"created_at": manifest["created_at"], "files": len(manifest["sha256"])},
            )
        db.dispose()
        typer.echo(f"restored {folder} (backup of {manifest['created_at']})")
