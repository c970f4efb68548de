"""Worker heartbeats: each worker records that it is alive; readiness checks read the window.

``GET /api/v1/health`` and ``radcheck worker --check`` (a container health check) ask
:func:`worker_alive`; a worker calls :func:`record_worker_heartbeat` every few seconds and while it
renews a job's lease.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import WorkerHeartbeat
from app.services.clock import db_now

__all__ = ["record_worker_heartbeat", "worker_alive"]


def record_worker_heartbeat(session: Session, *, worker_id: str) -> None:
    """Note that ``worker_id`` (this host and process) is alive now."""
    now = db_now(session)
    row = session.get(WorkerHeartbeat, worker_id)
    if row is None:
        session.add(
            WorkerHeartbeat(
                worker_id=worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                started_at=now,
                last_seen_at=now,
            )
        )
    else:
        row.last_seen_at = now


def worker_alive(session: Session, *, within: timedelta, hostname: str | None = None) -> bool:
    """Has any worker (on ``hostname``, if given) heart-beat within the last ``within``?"""
    query = select(WorkerHeartbeat.worker_id).where(
        WorkerHeartbeat.last_seen_at >= db_now(session) - within
    )
    if hostname is not None:
        query = query.where(WorkerHeartbeat.hostname == hostname)
    return session.scalar(query.limit(1)) is not None
