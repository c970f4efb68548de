"""Backups: the database (SQLite online backup API, or pg_dump) plus the file store, with a manifest.

A backup folder holds ``manifest.json`` (SHA-256 of every file in it), the database
(``radcheck.db`` or ``radcheck.pgdump``) and ``files/`` (the content-addressed DICOM store). The
database is copied first: files are written before the rows that name them commit, so every file
the copied database refers to is already there when the store is copied. Restore checks every hash
before it writes anything, and only into an empty data directory / database.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from app.db.migrate import current_revision
from app.db.session import Database
from app.services.errors import ConflictError, InvalidInputError, ServiceError

__all__ = ["BackupResult", "backup", "restore", "verify_backup"]

MANIFEST = "manifest.json"
SQLITE_FILE = "radcheck.db"
PG_FILE = "radcheck.pgdump"
FORMAT = 1


@dataclass(frozen=True)
class BackupResult:
    folder: Path
    database: str
    files: int
    bytes: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _libpq_url(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it (no +driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ServiceError(
            f"{name} is not installed: install the PostgreSQL client (Debian: apt-get install "
            f"postgresql-client) or back the database up with your own {name} and copy the data "
            "directory's files/ folder next to it."
        )
    return found


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _copy_tree(src: Path, dst: Path, manifest: dict[str, str], prefix: str) -> int:
    total = 0
    if not src.is_dir():
        return 0
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.name.startswith(".incoming-"):
            continue
        relative = path.relative_to(src)
        target = dst / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(path, target)
        target.chmod(0o600)
        manifest[f"{prefix}/{relative.as_posix()}"] = _sha256(target)
        total += target.stat().st_size
    return total


def backup(database_url: str, files_dir: Path, dest: Path) -> BackupResult:
    """Write a consistent backup of the database and the file store into the empty folder ``dest``."""
    if dest.exists() and any(dest.iterdir()):
        raise ConflictError(f"The backup folder {dest} is not empty: give a new or empty folder.")
    _private_dir(dest)
    url = make_url(database_url)
    db = Database(database_url, pool_size=1)
    revision = current_revision(db.engine)
    db.dispose()
    hashes: dict[str, str] = {}
    if url.get_backend_name() == "sqlite":
        target = dest / SQLITE_FILE
        source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)  # the online backup API: consistent while the server writes
        finally:
            copy.close()
            source.close()
        target.chmod(0o600)
        kind, db_file = "sqlite", SQLITE_FILE
    else:
        target = dest / PG_FILE
        subprocess.run(
            [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target),
             "--dbname", _libpq_url(database_url)],
            check=True, capture_output=True, timeout=3600,
        )  # fmt: skip
        target.chmod(0o600)
        kind, db_file = "postgresql", PG_FILE
    hashes[db_file] = _sha256(target)
    size = target.stat().st_size + _copy_tree(files_dir, dest / "files", hashes, "files")
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "database": {"kind": kind, "file": db_file, "schema_revision": revision},
        "sha256": hashes,
    }
    path = dest / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    path.chmod(0o600)
    return BackupResult(dest, kind, len(hashes) - 1, size)


def verify_backup(src: Path) -> dict[str, Any]:
    """The manifest, after checking every listed file's hash and that nothing is unlisted."""
    path = src / MANIFEST
    if not path.is_file():
        raise InvalidInputError(f"{src} is not a RadCheck backup: it has no {MANIFEST}.")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise InvalidInputError(f"{path}: unknown backup format {manifest.get('format')!r}.")
    listed: dict[str, str] = manifest["sha256"]
    present = {
        p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and p.name != MANIFEST
    }
    problems = [f"{name}: missing" for name in sorted(listed.keys() - present)]
    problems += [f"{name}: not in the manifest" for name in sorted(present - listed.keys())]
    problems += [
        f"{name}: SHA-256 differs from the manifest"
        for name in sorted(listed.keys() & present)
        if _sha256(src / name) != listed[name]
    ]
    if problems:
        raise InvalidInputError(
            f"The backup in {src} is damaged ({len(problems)} problem(s)); nothing was restored: "
            + "; ".join(problems[:10])
        )
    return manifest


def restore(src: Path, database_url: str, files_dir: Path) -> dict[str, Any]:
    """Restore a verified backup into an empty database and file store."""
    manifest = verify_backup(src)
    kind = manifest["database"]["kind"]
    url = make_url(database_url)
    if kind != url.get_backend_name():
        raise InvalidInputError(
            f"The backup holds a {kind} database but the configured database is "
            f"{url.get_backend_name()}: restore into a {kind} database (RADCHECK_DATABASE__URL)."
        )
    if files_dir.exists() and any(files_dir.iterdir()):
        raise ConflictError(f"{files_dir} is not empty: restore into a fresh data directory.")
    db = Database(database_url, pool_size=1)
    tables = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
    db.dispose()
    if tables:
        raise ConflictError(
            "The configured database already has RadCheck tables: restore into an empty database "
            "(a fresh data directory, or a new PostgreSQL database)."
        )
    if kind == "sqlite":
        target = Path(str(url.database))
        _private_dir(target.parent)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(src / SQLITE_FILE, target)
        target.chmod(0o600)
    else:
        subprocess.run(
            [_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--clean", "--if-exists",
             "--dbname", _libpq_url(database_url), str(src / PG_FILE)],
            check=True, capture_output=True, timeout=3600,
        )  # fmt: skip
    _private_dir(files_dir)
    _copy_tree(src / "files", files_dir, {}, "files")
    return manifest
