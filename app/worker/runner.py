"""The check worker: claim a job, keep its lease alive, run the pipeline, store the result."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from app.db.session import Database
from app.services import exports, heartbeats, jobs
from app.services.clock import db_now
from app.services.errors import LeaseLostError
from app.services.ingest import IngestLimits, mark_complete_studies
from app.services.pipeline import CheckPipeline
from app.services.report_intake import match_waiting_reports
from app.settings import ExportMode, ExportSettings, PacsSettings
from app.worker.exports import ExportRunner
from app.worker.retrievals import RetrievalRunner

__all__ = ["Worker"]

logger = logging.getLogger(__name__)


class Worker:
    """One worker (a thread in ``radcheck serve``, or the ``radcheck worker`` process)."""

    def __init__(
        self,
        db: Database,
        pipeline_factory: Callable[[], CheckPipeline],
        *,
        files_dir: Path,
        lease_s: float,
        poll_interval_s: float,
        quiet_period_s: float,
        worker_id: str | None = None,
        max_attempts: int = 3,
        export: ExportSettings | None = None,
        pacs: PacsSettings | None = None,
        limits: IngestLimits | None = None,
    ) -> None:
        """``limits`` (the configured decode bounds) are required when ``pacs`` has nodes: the
        retrieval runner ingests what it pulls with them."""
        self.db = db
        self._pipeline_factory = pipeline_factory
        self._pipeline: CheckPipeline | None = None
        self.files_dir = files_dir
        self.lease = timedelta(seconds=lease_s)
        self.poll_interval_s = poll_interval_s
        self.quiet_period = timedelta(seconds=quiet_period_s)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._last_heartbeat = 0.0
        self.max_attempts = max_attempts
        self.stop_event = threading.Event()
        self.export = export
        self.pacs = pacs
        self.exporter = (
            ExportRunner(
                db,
                files_dir=files_dir,
                export=export,
                pacs=pacs,
                worker_id=self.worker_id,
                lease_s=max(lease_s, 60.0),
            )
            if export is not None and pacs is not None and export.destination is not None
            else None
        )
        self.puller: RetrievalRunner | None = None
        if pacs is not None and pacs.nodes:
            if limits is None:
                raise ValueError("Worker: PACS nodes are configured but no decode limits given")
            self.puller = RetrievalRunner(
                db,
                files_dir=files_dir,
                pacs=pacs,
                worker_id=self.worker_id,
                lease_s=max(lease_s, 60.0),
                limits=limits,
            )

    @property
    def pipeline(self) -> CheckPipeline:
        if self._pipeline is None:
            self._pipeline = self._pipeline_factory()
        return self._pipeline

    def beat(self) -> None:
        """Record that this worker is alive (what ``worker_alive`` and the health check read)."""
        with self.db.session() as session:
            heartbeats.record_worker_heartbeat(session, worker_id=self.worker_id)
        self._last_heartbeat = time.monotonic()

    def complete_quiet_studies(self) -> None:
        """Mark studies that have received no instance for the quiet period as complete."""
        with self.db.session() as session:
            mark_complete_studies(session, quiet_period=self.quiet_period, now=db_now(session))

    def run_forever(self) -> None:
        logger.info("worker %s started", self.worker_id)
        self.pipeline  # noqa: B018 - load the checker and model before the first claim
        while not self.stop_event.is_set():
            try:
                if time.monotonic() - self._last_heartbeat > 5:
                    self.beat()
                    self.complete_quiet_studies()
                worked = self.run_once()
            except Exception:
                logger.exception("worker %s: unexpected error; continuing", self.worker_id)
                worked = False
            if not worked:
                self.stop_event.wait(self.poll_interval_s)
        logger.info("worker %s stopped", self.worker_id)

    def match_reports(self) -> int:
        """Attach reports that were waiting for their study (HL7 intake) and queue their checks."""
        with self.db.session() as session:
            return match_waiting_reports(session, max_attempts=self.max_attempts)

    def run_once(self) -> bool:
        """Claim and process at most one job; returns True if one was processed."""
        self.match_reports()
        exported = self.exporter.run_once() if self.exporter is not None else False
        pulled = self.puller.run_once() if self.puller is not None else False
        with self.db.session() as session:
            job_id = jobs.claim_next(
                session,
                worker_id=self.worker_id,
                lease=self.lease,
                quiet_period=self.quiet_period,
            )
        if job_id is None:
            return exported or pulled
        logger.info("job %s claimed by %s", job_id, self.worker_id)
        lost = threading.Event()
        done = threading.Event()
        keeper = threading.Thread(
            target=self._keep_lease, args=(job_id, done, lost), name=f"lease-{job_id}", daemon=True
        )
        keeper.start()
        try:
            with self.db.session() as session:
                inputs = jobs.load_inputs(session, job_id=job_id, files_dir=self.files_dir)
            result = self.pipeline.run(inputs, should_stop=lost.is_set)
        except LeaseLostError:
            done.set()
            keeper.join()
            logger.warning("job %s: lease lost; stopped without writing", job_id)
            return True
        except Exception as exc:
            done.set()
            keeper.join()
            logger.exception("job %s failed", job_id)
            with self.db.session() as session:
                jobs.fail_job(
                    session,
                    job_id=job_id,
                    worker_id=self.worker_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return True
        done.set()
        keeper.join()
        with self.db.session() as session:
            stored = jobs.complete_job(
                session, job_id=job_id, worker_id=self.worker_id, result=result
            )
            if stored and self.exporter is not None and self.export and self.pacs:
                exports.auto_export(
                    session,
                    check_job_id=job_id,
                    export=self.export,
                    pacs=self.pacs,
                    event=ExportMode.AUTO_ON_COMPLETE,
                    actor=f"worker:{self.worker_id}",
                )
        logger.info("job %s %s", job_id, "succeeded" if stored else "result discarded")
        return True

    def _keep_lease(self, job_id: int, done: threading.Event, lost: threading.Event) -> None:
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while not done.wait(interval):
            try:
                with self.db.session() as session:
                    owned = jobs.renew_lease(
                        session, job_id=job_id, worker_id=self.worker_id, lease=self.lease
                    )
                    heartbeats.record_worker_heartbeat(session, worker_id=self.worker_id)
            except Exception:
                logger.exception("job %s: lease renewal failed; will retry", job_id)
                continue
            if not owned:
                lost.set()
                logger.warning("job %s: lease lost", job_id)
                return

    def start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run_forever, name="radcheck-worker", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()
