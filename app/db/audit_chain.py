"""The audit table's hash chain: each row's hash covers the previous row's hash and its own content.

A single-row table ``audit_chain`` holds the chain's head (last position and hash). Every insert
into ``audit_events`` first updates that row (once for a batch: ``advance`` takes the positions of
all its rows in one statement), which serialises audit writers on both backends
(PostgreSQL: a row lock held to commit; SQLite: the database write lock), so positions are gapless
and the chain is linear under any concurrency. An edited row no longer matches its hash; a deleted
row leaves a gap in the positions and a broken link; a truncated tail disagrees with the head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypedDict

from sqlalchemy import Connection, text

__all__ = ["GENESIS", "ChainContent", "advance", "row_digest"]

GENESIS = "0" * 64
"""The ``prev_hash`` of the first row."""


def _at(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite keeps no zone: UTC is implied
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ChainContent(TypedDict):
    """What a row's hash covers, besides its position and the previous hash."""

    at: datetime
    actor: str
    action: str
    study_id: int | None
    object_type: str | None
    object_id: str | None
    details: dict[str, Any] | None


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


def advance(connection: Connection, rows: Sequence[ChainContent]) -> list[tuple[int, str, str]]:
    """Take the next ``len(rows)`` positions under the head's lock, in order; returns each row's
    (seq, prev_hash, row_hash). Two statements however many rows: a batch of read events costs
    what one event does."""
    if not rows:
        return []
    last, prev = connection.execute(
        text("UPDATE audit_chain SET seq = seq + :n WHERE id = 1 RETURNING seq, last_hash"),
        {"n": len(rows)},
    ).one()
    links: list[tuple[int, str, str]] = []
    prev = str(prev)
    for seq, content in enumerate(rows, start=int(last) - len(rows) + 1):
        digest = row_digest(prev, seq=seq, **content)
        links.append((seq, prev, digest))
        prev = digest
    connection.execute(text("UPDATE audit_chain SET last_hash = :h WHERE id = 1"), {"h": prev})
    return links
