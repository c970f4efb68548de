"""The append-only audit trail: who read, checked, reviewed or exported which study."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from app.db.audit_chain import ChainContent, advance
from app.db.models import AuditEvent, utcnow
from app.db.session import Database

__all__ = ["ReadAuditBuffer", "record"]

logger = logging.getLogger(__name__)


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    study_id: int | None = None,
    object_type: str | None = None,
    object_id: str | int | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Add one audit event to the caller's unit of work (no PHI in ``details``)."""
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            study_id=study_id,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            details=details or {},
        )
    )


class ReadAuditBuffer:
    """Batches read events (``study.read``, ``check.read``) into one transaction every ``interval_s``.

    Reads are the hot path: one synchronous commit per read would serialise every reader on the
    database's write lock. A batch takes its places in the hash chain together (``advance``) and is
    inserted in one statement, so it costs four statements whatever its size. Writes (uploads,
    reports, checks, reviews) are still audited in their own transaction. On a crash at most
    ``interval_s`` of read events can be lost; a clean shutdown flushes everything.
    """

    def __init__(self, db: Database, *, interval_s: float = 0.5, max_batch: int = 1000) -> None:
        self.db = db
        self.interval_s = interval_s
        self.max_batch = max_batch
        self._events: list[ChainContent] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(
        self,
        *,
        actor: str,
        action: str,
        study_id: int | None = None,
        object_type: str | None = None,
        object_id: str | int | None = None,
    ) -> None:
        event = ChainContent(
            at=utcnow(),
            actor=actor,
            action=action,
            study_id=study_id,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            details={},
        )
        with self._lock:
            self._events.append(event)
            if len(self._events) >= self.max_batch:
                self._wake.set()

    def flush(self) -> int:
        with self._lock:
            batch, self._events = self._events, []
        if batch:
            try:
                with self.db.session() as session:
                    links = advance(session.connection(), batch)
                    session.execute(
                        insert(AuditEvent),
                        [
                            {**event, "seq": seq, "prev_hash": prev, "row_hash": digest}
                            for event, (seq, prev, digest) in zip(batch, links, strict=True)
                        ],
                    )
            except Exception:
                logger.exception("could not write %d read audit events; will retry", len(batch))
                with self._lock:
                    self._events = batch + self._events
                return 0
        return len(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()
        self.flush()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit-reads", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
