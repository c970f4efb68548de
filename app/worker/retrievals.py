"""The retrieval worker: claim a queued (or abandoned) PACS pull and run it to the end."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from app.db.models import JobStatus, PacsRetrieval, utcnow
from app.db.session import Database
from app.services import leases, pacs_retrieve
from app.services.ingest import IngestLimits
from app.services.storage import ContentStore
from app.settings import PacsSettings

__all__ = ["RetrievalRunner"]

logger = logging.getLogger(__name__)


class RetrievalRunner:
    """Runs PACS retrievals; driven by the check worker's loop (one retrieval per turn).

    A retrieval renews its lease after each instance; one whose runner died (the API or worker
    process killed mid-pull) is claimed again once its lease has expired and run from the start
    (instances already stored count as stored), at most ``pacs_retrieve.MAX_ATTEMPTS`` times.
    """

    def __init__(
        self,
        db: Database,
        *,
        files_dir: Path,
        pacs: PacsSettings,
        worker_id: str,
        lease_s: float,
        limits: IngestLimits,
    ) -> None:
        self.db = db
        self.limits = limits
        self.store = ContentStore(files_dir)
        self.pacs = pacs
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_s)

    def run_once(self) -> bool:
        """Claim and run at most one retrieval; True if one was run."""
        with self.db.session() as session:
            retrieval_id = pacs_retrieve.claim_retrieval(
                session, worker_id=self.worker_id, lease=self.lease
            )
        if retrieval_id is None:
            return False
        with self.db.session() as session:
            row = session.get(PacsRetrieval, retrieval_id)
            name = row.node if row is not None else ""
        node = self.pacs.node(name)
        if node is None:
            self._fail(
                retrieval_id, f"PACS node {name!r} is no longer configured (RADCHECK_PACS__NODES)"
            )
            return True
        logger.info("PACS retrieval %d claimed by %s", retrieval_id, self.worker_id)
        view = pacs_retrieve.run_retrieval(
            self.db,
            self.store,
            node,
            retrieval_id,
            calling_ae_title=self.pacs.calling_ae_title,
            worker_id=self.worker_id,
            lease=self.lease,
            limits=self.limits,
        )
        logger.info("PACS retrieval %d %s", retrieval_id, view.status)
        return True

    def _fail(self, retrieval_id: int, error: str) -> None:
        def work(session: Session) -> None:
            row = leases.held(session, PacsRetrieval, retrieval_id, self.worker_id)
            if row is not None:
                row.status = JobStatus.FAILED
                row.error = error
                row.finished_at = utcnow()
                leases.release(row)

        self.db.run(work)
