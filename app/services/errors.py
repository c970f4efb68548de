"""Service-level errors. They carry no HTTP status: app/api/errors.py maps them."""

from __future__ import annotations

import errno


class ServiceError(Exception):
    """Root of the errors a use case raises on purpose."""


class NotFoundError(ServiceError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class ConflictError(ServiceError):
    """The request contradicts the current state (e.g. retrying a job that did not fail)."""


class InvalidInputError(ServiceError):
    """The request is well-formed but its content cannot be used; the message says how to fix it."""


class PayloadTooLargeError(ServiceError):
    """An upload exceeds a configured limit."""


class ReportTooLargeError(PayloadTooLargeError, InvalidInputError):
    """A report is longer than the configured limit (413 on the API, AR on HL7)."""


class StorageFullError(ServiceError, OSError):
    """The file store has no space left; nothing was stored (507). An ``OSError`` with ``errno``
    ENOSPC (or EDQUOT), so callers that handle a full disk as an ``OSError`` keep working."""

    def __str__(self) -> str:
        return str(self.strerror)


def database_disk_full(exc: BaseException) -> StorageFullError | None:
    """The 507 for a database that refused a write for want of disk space (SQLite's SQLITE_FULL,
    "database or disk is full", its file or WAL in the data directory; PostgreSQL's disk_full,
    SQLSTATE 53100), or None when ``exc`` (a SQLAlchemy error) is something else."""
    orig = getattr(exc, "orig", None)
    if not (
        getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL"
        or getattr(orig, "sqlstate", None) == "53100"
    ):
        return None
    return StorageFullError(
        errno.ENOSPC,
        "No space left on the database's disk (SQLite: the data directory; PostgreSQL: the "
        "server's data directory); nothing was changed. Free disk space in the data directory "
        "(RADCHECK_STORAGE__DATA_DIR) or on the database server, then re-send.",
    )


class CheckIncompleteError(ServiceError):
    """A check could not run every configured check (e.g. the model endpoint is down)."""


class LeaseLostError(ServiceError):
    """This worker no longer holds the job's lease: it must stop and write nothing."""
