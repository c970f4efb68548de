"""Pulling a study from a configured PACS node into RadCheck's store, as a job with progress.

``create_retrieval`` records the request; ``run_retrieval`` finds the study (by Study Instance UID
or accession number) with QIDO-RS, fetches each instance with WADO-RS (or, for a DIMSE node, finds it with C-FIND and
fetches it by C-GET on the same association, or has it sent by C-MOVE to RadCheck's listener) and
stores it through the same ingest service as every other way in, updating ``total`` / ``stored`` /
``failed`` after each instance so ``GET /api/v1/pacs/retrievals/{id}`` shows progress.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

import dicom_io
from app.db.models import JobStatus, PacsRetrieval, utcnow
from app.db.session import Database
from app.services import audit, leases
from app.services.clock import db_now
from app.services.errors import InvalidInputError, LeaseLostError, NotFoundError
from app.services.ingest import IngestLimits, ingest_instance
from app.services.storage import ContentStore
from app.settings import PacsNode, PacsSettings
from dicom_io.net import DicomWebSource, DimseSource, Status

__all__ = [
    "MAX_ATTEMPTS",
    "RetrievalView",
    "claim_retrieval",
    "create_retrieval",
    "get_retrieval",
    "run_retrieval",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrievalView:
    id: int
    node: str
    method: str
    study_instance_uid: str | None
    accession_number: str | None
    status: str
    total: int
    stored: int
    failed: int
    studies: list[str]
    error: str | None

    @classmethod
    def of(cls, row: PacsRetrieval) -> RetrievalView:
        return cls(
            id=row.id,
            node=row.node,
            method=row.method,
            study_instance_uid=row.study_instance_uid,
            accession_number=row.accession_number,
            status=row.status,
            total=row.total,
            stored=row.stored,
            failed=row.failed,
            studies=list(row.studies or []),
            error=row.error,
        )


def resolve_node(pacs: PacsSettings, name: str | None) -> PacsNode:
    if not pacs.nodes:
        raise InvalidInputError(
            "No PACS node is configured: set RADCHECK_PACS__NODES (a JSON list, see docs/pacs.md)."
        )
    if name is None:
        if len(pacs.nodes) > 1:
            raise InvalidInputError(
                "Several PACS nodes are configured: name one ("
                + ", ".join(n.name for n in pacs.nodes)
                + ")."
            )
        return pacs.nodes[0]
    node = pacs.node(name)
    if node is None:
        raise InvalidInputError(
            f"No PACS node named {name!r}; configured: {', '.join(n.name for n in pacs.nodes)}."
        )
    return node


def create_retrieval(
    session: Session,
    node: PacsNode,
    *,
    study_instance_uid: str | None,
    accession_number: str | None,
    actor: str,
) -> RetrievalView:
    if bool(study_instance_uid) == bool(accession_number):
        raise InvalidInputError("Give exactly one of study_instance_uid and accession_number.")
    row = PacsRetrieval(
        node=node.name,
        method=node.retrieve_method,
        study_instance_uid=study_instance_uid,
        accession_number=accession_number,
        status=JobStatus.QUEUED,
        total=0,
        stored=0,
        failed=0,
        studies=[],
        requested_by=actor,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="pacs.retrieve.requested",
        object_type="pacs_retrieval",
        object_id=row.id,
        details={"node": node.name},
    )
    return RetrievalView.of(row)


def get_retrieval(session: Session, retrieval_id: int) -> RetrievalView:
    row = session.get(PacsRetrieval, retrieval_id)
    if row is None:
        raise NotFoundError(f"No PACS retrieval with id {retrieval_id}.")
    return RetrievalView.of(row)


MAX_ATTEMPTS = 3


def _stale(now: datetime, lease: timedelta) -> ColumnElement[bool]:
    """A running retrieval nobody is working on: lease expired (or, from before leases, none)."""
    return or_(
        leases.expired(PacsRetrieval, now),
        and_(
            PacsRetrieval.status == JobStatus.RUNNING,
            PacsRetrieval.lease_expires_at.is_(None),
            PacsRetrieval.started_at < now - lease,
        ),
    )


def _give_up_exhausted(session: Session, now: datetime, lease: timedelta) -> None:
    """Stale retrievals that already had ``MAX_ATTEMPTS`` runs are failed instead of run again."""
    for row in leases.abandon_exhausted(
        session,
        PacsRetrieval,
        stale=_stale(now, lease),
        exhausted=PacsRetrieval.attempts >= MAX_ATTEMPTS,
        now=now,
    ):
        row.error = (
            f"abandoned: the process running it stopped {row.attempts} times before finishing "
            "(lease expired); post the retrieval again"
        )
        audit.record(
            session,
            actor="worker",
            action="pacs.retrieve.abandoned",
            object_type="pacs_retrieval",
            object_id=row.id,
            details={"node": row.node, "attempts": row.attempts},
        )


def claim_retrieval(
    session: Session, *, worker_id: str, lease: timedelta, retrieval_id: int | None = None
) -> int | None:
    """Claim a retrieval to run: the oldest queued one, or one whose runner stopped (lease
    expired), or exactly ``retrieval_id`` when given (the CLI runs the row it just created).
    Returns its id, or None when there is nothing to claim."""
    now = db_now(session)
    _give_up_exhausted(session, now, lease)
    among = select(PacsRetrieval.id)
    if retrieval_id is not None:
        among = among.where(PacsRetrieval.id == retrieval_id)
    return leases.claim(
        session,
        PacsRetrieval,
        runnable=or_(PacsRetrieval.status == JobStatus.QUEUED, _stale(now, lease)),
        among=among,
        worker_id=worker_id,
        lease=lease,
        now=now,
        reset={"total": 0, "stored": 0, "failed": 0, "error": None},
    )


@dataclass
class _Progress:
    """One claimed run of a retrieval: writes its progress, and renews the lease while doing so.

    Every write checks that this runner still holds the lease; when another runner has taken the
    row over (this one was too slow), :class:`LeaseLostError` stops this run without writing."""

    db: Database
    retrieval_id: int
    worker_id: str
    lease: timedelta
    stored: int = 0
    failed: int = 0

    def update(self, **values: object) -> None:
        def work(session: Session) -> None:
            if not leases.renew(
                session,
                PacsRetrieval,
                row_id=self.retrieval_id,
                worker_id=self.worker_id,
                lease=self.lease,
                values=values,
            ):
                raise LeaseLostError(
                    f"PACS retrieval {self.retrieval_id} is no longer held by {self.worker_id}."
                )

        self.db.run(work)

    def count(self, *, ok: bool) -> None:
        if ok:
            self.stored += 1
        else:
            self.failed += 1
        self.update(stored=self.stored, failed=self.failed)


def _dicomweb(node: PacsNode) -> DicomWebSource:
    assert node.dicomweb_url is not None
    return DicomWebSource(
        node.dicomweb_url,
        username=node.username,
        password=node.password.get_secret_value() if node.password else None,
        bearer_token=node.bearer_token.get_secret_value() if node.bearer_token else None,
        timeout_s=node.timeout_s,
    )


def _dimse(node: PacsNode, calling_ae_title: str) -> DimseSource:
    assert node.ae_title is not None and node.host is not None and node.port is not None
    return DimseSource(
        calling_ae=calling_ae_title,
        peer_ae=node.ae_title,
        host=node.host,
        port=node.port,
        timeout_s=node.timeout_s,
    )


def _ingest(
    db: Database,
    store: ContentStore,
    node: PacsNode,
    data: bytes,
    limits: IngestLimits,
) -> bool:
    """Store one fetched instance (within the configured decode ``limits``); False when it
    conflicts with a stored one (same UID, other bytes)."""
    outcome = db.run(
        partial(
            ingest_instance,
            store=store,
            data=data,
            actor=f"pacs:{node.name}",
            source="pacs",
            limits=limits,
        )
    )
    return not outcome.conflict


def _pull_dicomweb(
    db: Database,
    store: ContentStore,
    node: PacsNode,
    view: RetrievalView,
    progress: _Progress,
    limits: IngestLimits,
) -> int:
    source = _dicomweb(node)
    studies = source.find_studies(
        study_instance_uid=view.study_instance_uid, accession_number=view.accession_number
    )
    _found(progress, node, view, studies)
    remotes = [r for study in studies for r in source.instances(study)]
    progress.update(total=len(remotes))
    for remote in remotes:
        try:
            progress.count(ok=_ingest(db, store, node, source.fetch(remote), limits))
        except dicom_io.DicomIOError as exc:
            progress.count(ok=False)
            logger.warning("PACS retrieval %d: an instance failed: %s", view.id, exc)
    return len(remotes)


def _cstore_status(
    db: Database, store: ContentStore, node: PacsNode, data: bytes, limits: IngestLimits
) -> int:
    """The C-STORE status RadCheck answers for one instance the PACS sends during a C-GET (as the
    listener does: past a decode limit is out of resources)."""
    try:
        stored = _ingest(db, store, node, data, limits)
        return Status.SUCCESS if stored else Status.DUPLICATE_SOP_INSTANCE
    except dicom_io.LimitExceededError as exc:
        logger.warning("PACS retrieval: instance refused: %s", exc)
        return Status.OUT_OF_RESOURCES
    except (dicom_io.MissingElementError, dicom_io.InvalidElementError):
        return Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    except dicom_io.DicomIOError:
        return Status.CANNOT_UNDERSTAND


def _pull_dimse(
    db: Database,
    store: ContentStore,
    node: PacsNode,
    view: RetrievalView,
    progress: _Progress,
    calling_ae_title: str,
    limits: IngestLimits,
) -> int:
    source = _dimse(node, calling_ae_title)
    studies = source.find_studies(
        study_instance_uid=view.study_instance_uid, accession_number=view.accession_number
    )
    _found(progress, node, view, studies)
    listing = {study: source.instances(study) for study in studies}
    total = sum(len(v) for v in listing.values())
    progress.update(total=total)
    for study, instances in listing.items():
        if view.method == "c-get":

            def received(data: bytes) -> int:
                status = _cstore_status(db, store, node, data, limits)
                progress.count(ok=status == Status.SUCCESS)
                return status

            before = progress.failed
            counts = source.get_study(study, [c for c, _ in instances], received)
            # the PACS's failed sub-operations also count instances it could not send at all
            unsent = counts.failed - (progress.failed - before)
            if unsent > 0:
                progress.failed += unsent
        else:
            counts = source.move_study(study, calling_ae_title)
            progress.stored += counts.completed + counts.warning
            progress.failed += counts.failed
            progress.update(stored=progress.stored, failed=progress.failed)
    return total


def _found(progress: _Progress, node: PacsNode, view: RetrievalView, studies: list[str]) -> None:
    if not studies:
        what = view.study_instance_uid or f"accession number {view.accession_number}"
        raise dicom_io.DicomIOError(f"The PACS {node.name!r} has no study {what}.")
    progress.update(studies=studies)


def run_retrieval(
    db: Database,
    store: ContentStore,
    node: PacsNode,
    retrieval_id: int,
    *,
    calling_ae_title: str,
    worker_id: str,
    lease: timedelta,
    limits: IngestLimits,
) -> RetrievalView:
    """Run one claimed retrieval (:func:`claim_retrieval`) to the end, renewing its lease as it
    goes. Failures are recorded on the job, never raised; a lost lease stops it without writing.

    ``calling_ae_title`` is RadCheck's AE title towards a DIMSE node, and the C-MOVE destination.
    ``limits`` are the configured decode bounds (RADCHECK_STORAGE__MAX_INFLATED_BYTES,
    ..._MAX_PIXEL_BYTES); instances sent by C-MOVE arrive at the listener, which applies its own.
    """
    view = db.run(lambda s: get_retrieval(s, retrieval_id))
    progress = _Progress(db, retrieval_id, worker_id, lease)
    try:
        try:
            if view.method == "dicomweb":
                total = _pull_dicomweb(db, store, node, view, progress, limits)
            else:
                total = _pull_dimse(db, store, node, view, progress, calling_ae_title, limits)
            failed = progress.failed
            status = JobStatus.SUCCEEDED if failed == 0 else JobStatus.FAILED
            error = None if failed == 0 else f"{failed} of {total} instances failed"
        except LeaseLostError:
            raise
        except dicom_io.DicomIOError as exc:
            status, error = JobStatus.FAILED, str(exc)
        except Exception as exc:  # a job never dies silently: the error is kept on the row
            logger.exception("PACS retrieval %d failed", retrieval_id)
            status, error = JobStatus.FAILED, f"internal error: {type(exc).__name__}"
        progress.update(
            status=status,
            error=error,
            stored=progress.stored,
            failed=progress.failed,
            finished_at=utcnow(),
            lease_owner=None,
        )
    except LeaseLostError:
        logger.warning("PACS retrieval %d: lease lost; stopped without writing", retrieval_id)
    return db.run(lambda s: get_retrieval(s, retrieval_id))
