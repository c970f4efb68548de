"""The audit table's hash chain: each row's hash covers the previous row's hash and its own content.

A single-row table ``audit_chain`` holds the chain's head (last position and hash). Every insert
into ``audit_events`` first updates that row, which serialises audit writers on both backends
(PostgreSQL: a row lock held to commit; SQLite: the database write lock), so positions are gapless
and the chain is linear under any concurrency. An edited row no longer matches its hash; a deleted
row leaves a gap in the positions and a broken link; a truncated tail disagrees with the head.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, text

__all__ = ["GENESIS", "advance", "row_digest"]

GENESIS = "0" * 64
"""The ``prev_hash`` of the first row."""


def _at(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite keeps no zone: UTC is implied
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_digest(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    study_id: int | None,
    object_type: str | None,
    object_id: str | None,
    details: dict[str, Any] | None,
) -> str:
    """SHA-256 over the previous hash and a canonical JSON of the row's content."""
    content = json.dumps(
        [seq, _at(at), actor, action, study_id, object_type, object_id, details or {}],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


def advance(connection: Connection, digest_for: Any) -> tuple[int, str, str]:
    """Take the next position under the head's lock; returns (seq, prev_hash, row_hash).

    ``digest_for(seq, prev_hash)`` computes the new row's hash.
    """
    seq, prev = connection.execute(
        text("UPDATE audit_chain SET seq = seq + 1 WHERE id = 1 RETURNING seq, last_hash")
    ).one()
    digest: str = digest_for(int(seq), str(prev))
    connection.execute(text("UPDATE audit_chain SET last_hash = :h WHERE id = 1"), {"h": digest})
    return int(seq), str(prev), digest
