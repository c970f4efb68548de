"""Content-addressed file storage: a file is named by its SHA-256 and is durable before we answer."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ContentStore", "StoredFile"]


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    relative_path: str
    size_bytes: int
    created: bool


class ContentStore:
    """Files under ``root/ab/cd/<sha256>``; writing the same bytes twice stores one copy."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, relative_path: str) -> Path:
        return self.root / relative_path

    def put(self, data: bytes) -> StoredFile:
        """Write ``data`` durably (temp file, fsync, atomic rename, fsync of the folder)."""
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{digest[:2]}/{digest[2:4]}/{digest}"
        target = self.root / relative
        if target.exists() and target.stat().st_size == len(data):
            return StoredFile(digest, relative, len(data), created=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp_name).replace(target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return StoredFile(digest, relative, len(data), created=True)

    def read(self, relative_path: str) -> bytes:
        return self.path_for(relative_path).read_bytes()
