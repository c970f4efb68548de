"""Engine and session factory. Built by the application factory or the CLI, never at import time."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

__all__ = ["Database", "create_db_engine"]

T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


# SQLite's companions: the write-ahead log and its shared-memory index hold the same PHI.
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _private_file(path: Path) -> None:
    """The database's folder and files are owner-only (0700 / 0600): they hold PHI.

    A database created by an older version (0644) is tightened too. SQLite creates its WAL and
    shared-memory files with the database file's mode, so they follow.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    _tighten(path)


def _tighten(path: Path) -> None:
    for suffix in _SQLITE_SUFFIXES:
        companion = path.with_name(path.name + suffix)
        try:
            if companion.stat().st_mode & 0o077:
                companion.chmod(0o600)
        except FileNotFoundError:
            continue


IDLE_PING_S = 1.0
"""A pooled connection idle this long is pinged before use (a restarted server dropped it)."""


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling without a round trip per checkout: a connection that came
    back to the pool less than ``IDLE_PING_S`` ago is handed out as is (under load, nearly every
    one), an older one answers ``SELECT 1`` first or is replaced. A server that went away between
    two busy requests fails one statement, which SQLAlchemy reads as a disconnect and answers by
    invalidating the pool, so the next request connects afresh."""

    @event.listens_for(engine, "checkin")
    def returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < IDLE_PING_S:
            return
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            if not getattr(dbapi_connection, "autocommit", True):
                dbapi_connection.rollback()  # end the ping's implicit transaction
        except Exception as exc:  # any failure: the pool retries with a new connection
            raise DisconnectionError(f"pooled connection is gone: {type(exc).__name__}") from exc


def create_db_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    """An engine with the pragmas RadCheck relies on (SQLite: WAL, foreign keys, busy timeout)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 15}}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = NullPool
        engine = create_engine(url, echo=echo, hide_parameters=True, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if parsed.database and parsed.database != ":memory:":
            db_path = Path(parsed.database)
            # The WAL and -shm appear once a connection switched to WAL (the pragma listener above
            # runs first): check their modes on each new connection (4 stat calls).
            event.listen(engine, "connect", lambda *_: _tighten(db_path))
        return engine
    # hide_parameters: error messages and tracebacks never carry bound values (report text, PHI).
    engine = create_engine(
        url, echo=echo, hide_parameters=True, pool_size=pool_size, max_overflow=pool_size
    )
    _ping_when_idle(engine)
    return engine


class ReadSessionWriteError(RuntimeError):
    """An ORM write through a read session: writes need a transaction (``Database.run``)."""


def _reads_only(session: Session, *_args: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadSessionWriteError(
            "a read session (Database.reader: no transaction) cannot write ORM objects; "
            "an audit row written there could break the hash chain: use Database.run"
        )


class Database:
    """An engine plus its session factory; one per process."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.engine = create_db_engine(url, pool_size=pool_size, echo=echo)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._lookups = sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )
        event.listen(self._lookups, "before_flush", _reads_only)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        ``immediate`` (writers): on SQLite the transaction starts with ``BEGIN IMMEDIATE``, taking
        the database's single write lock before the first read (waiting up to the busy timeout).
        Two writers then never read the same snapshot and race on what they number (report
        versions, check jobs), and never fail on upgrading a read lock ("database is locked"),
        which SQLite does not retry. Readers are not blocked (WAL). PostgreSQL: no effect (its
        writers lock the rows they number, e.g. ``SELECT ... FOR UPDATE``).
        """
        with self.sessions() as session, session.begin():
            if immediate and self.dialect == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session

    def run(self, work: Callable[[Session], T], *, attempts: int = 5, immediate: bool = True) -> T:
        """Run ``work`` in its own transaction, retrying when a concurrent writer got there first.

        Covers unique-constraint races (e.g. two submissions computing the same next version) and
        SQLite's "database is locked". ``work`` must be safe to repeat. A writer by default
        (``immediate``, see :meth:`session`); pass ``immediate=False`` for read-only work.
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.session(immediate=immediate) as session:
                    return work(session)
            except (IntegrityError, OperationalError) as exc:
                transient = isinstance(exc, IntegrityError) or "locked" in str(exc.orig)
                if not transient or attempt == attempts:
                    raise
                time.sleep(0.01 * attempt * attempt)
        raise AssertionError("unreachable")

    def read(self, work: Callable[[Session], T]) -> T:
        """Run a read (a credential lookup with its occasional bookkeeping statement, a study
        read) outside a transaction (see :meth:`reader`)."""
        with self.reader() as session:
            return work(session)

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for reads, outside a transaction: each statement commits by itself, so a
        read of N statements is N round trips on PostgreSQL instead of N + 2 (BEGIN, COMMIT).
        Nothing is lost by it: PostgreSQL's read committed gives each statement its own snapshot
        inside a transaction too, and SQLite's driver opens none for a SELECT. A write made
        through it (an audit row) is durable when the statement returns."""
        with self._lookups() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
