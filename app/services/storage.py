"""Content-addressed file storage: a file is named by its SHA-256 and is durable before we answer.

Writes are two-phase so a refused upload leaves nothing behind: :meth:`ContentStore.stage` writes
and fsyncs a temporary file, the caller records its row, and only a row that won is followed by
:meth:`ContentStore.commit` (atomic rename into place); a loser calls :meth:`ContentStore.discard`.
A full disk raises :class:`StorageFullError` with the partial temporary file removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.services.errors import StorageFullError

__all__ = ["ContentStore", "StagedFile", "StoredFile", "raise_if_full"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    relative_path: str
    size_bytes: int
    created: bool


@dataclass(frozen=True)
class StagedFile:
    """Bytes written and fsynced under a temporary name, not yet in place (``tmp`` None: the
    same content is already stored)."""

    sha256: str
    relative_path: str
    size_bytes: int
    tmp: Path | None


def _write_all(fd: int, data: bytes) -> None:
    """The write edge (tests make it fail with ENOSPC part-way)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def raise_if_full(exc: OSError, what: str) -> None:
    """Raise :class:`StorageFullError` naming ``what`` could not be written when ``exc`` is a full
    disk (ENOSPC, EDQUOT); return otherwise (the caller re-raises ``exc``)."""
    if exc.errno in _FULL:
        raise StorageFullError(
            exc.errno,
            f"No space left in the data directory for {what}, which was not stored. Free disk "
            "space in the data directory (RADCHECK_STORAGE__DATA_DIR), then re-send.",
        ) from exc


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ContentStore:
    """Files under ``root/ab/cd/<sha256>``; writing the same bytes twice stores one copy."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, relative_path: str) -> Path:
        return self.root / relative_path

    def stage(self, data: bytes, *, sha256: str | None = None) -> StagedFile:
        """Write ``data`` to a temporary file beside its final name and fsync it.

        ``sha256``: the caller's hex digest of ``data``, when it has one already (hashing a
        radiograph costs about as much as writing it)."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        relative = f"{digest[:2]}/{digest[2:4]}/{digest}"
        target = self.root / relative
        if target.exists() and target.stat().st_size == len(data):
            return StagedFile(digest, relative, len(data), tmp=None)
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        except OSError as exc:
            raise_if_full(exc, f"a {len(data)}-byte file")
            raise
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            Path(tmp_name).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise_if_full(exc, f"a {len(data)}-byte file")
            raise
        return StagedFile(digest, relative, len(data), tmp=Path(tmp_name))

    def commit(self, staged: StagedFile) -> StoredFile:
        """Move a staged file into place (atomic rename, then fsync of its folder)."""
        target = self.root / staged.relative_path
        if staged.tmp is None:
            return StoredFile(staged.sha256, staged.relative_path, staged.size_bytes, False)
        staged.tmp.replace(target)
        _fsync_dir(target.parent)
        return StoredFile(staged.sha256, staged.relative_path, staged.size_bytes, True)

    def discard(self, staged: StagedFile) -> None:
        """Remove a staged file that will not be used (its row lost a race, or failed)."""
        if staged.tmp is not None:
            staged.tmp.unlink(missing_ok=True)

    def remove(self, relative_path: str) -> None:
        """Delete a stored file no row refers to any more (a broken instance replaced)."""
        self.path_for(relative_path).unlink(missing_ok=True)

    def put(self, data: bytes) -> StoredFile:
        """Write ``data`` durably (temp file, fsync, atomic rename, fsync of the folder)."""
        return self.commit(self.stage(data))

    def read(self, relative_path: str) -> bytes:
        return self.path_for(relative_path).read_bytes()
