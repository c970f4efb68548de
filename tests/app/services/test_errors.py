"""app/services/errors.py: a database out of disk space is told apart from a database outage."""

from __future__ import annotations

import errno
import sqlite3

from psycopg.errors import AdminShutdown, DiskFull
from sqlalchemy.exc import OperationalError

from app.services.errors import StorageFullError, database_disk_full


def test_postgresql_disk_full_is_a_storage_full_error_naming_the_fix() -> None:
    full = database_disk_full(OperationalError("INSERT", {}, DiskFull("could not extend file")))
    assert isinstance(full, StorageFullError) and full.errno == errno.ENOSPC
    assert "No space left on the database's disk" in str(full)
    assert "RADCHECK_STORAGE__DATA_DIR" in str(full)


def test_an_outage_or_another_sqlite_error_is_not_disk_full() -> None:
    gone = OperationalError("SELECT 1", {}, AdminShutdown("terminating connection"))
    assert database_disk_full(gone) is None
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("SELEC 1")
    except sqlite3.OperationalError as exc:
        assert database_disk_full(OperationalError("SELEC 1", {}, exc)) is None
    finally:
        conn.close()
