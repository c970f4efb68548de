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
from functools import partial

from sqlalchemy.orm import Session

import dicom_io
from app.db.models import JobStatus, PacsRetrieval, utcnow
from app.db.session import Database
from app.services import audit
from app.services.errors import InvalidInputError, NotFoundError
from app.services.ingest import ingest_instance
from app.services.storage import ContentStore
from app.settings import PacsNode, PacsSettings
from dicom_io.net import DicomWebSource, DimseSource, Status

__all__ = ["RetrievalView", "create_retrieval", "get_retrieval", "run_retrieval"]

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


def _update(db: Database, retrieval_id: int, **values: object) -> None:
    def work(session: Session) -> None:
        row = session.get(PacsRetrieval, retrieval_id)
        if row is None:
            raise NotFoundError(f"No PACS retrieval with id {retrieval_id}.")
        for key, value in values.items():
            setattr(row, key, value)

    db.run(work)


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


@dataclass
class _Progress:
    """Counts of one running retrieval, written to its row after each instance."""

    db: Database
    retrieval_id: int
    stored: int = 0
    failed: int = 0

    def count(self, *, ok: bool) -> None:
        if ok:
            self.stored += 1
        else:
            self.failed += 1
        _update(self.db, self.retrieval_id, stored=self.stored, failed=self.failed)


def _ingest(db: Database, store: ContentStore, node: PacsNode, data: bytes) -> bool:
    """Store one fetched instance; False when it conflicts with a stored one (same UID, other bytes)."""
    outcome = db.run(
        partial(ingest_instance, store=store, data=data, actor=f"pacs:{node.name}", source="pacs")
    )
    return not outcome.conflict


def _pull_dicomweb(
    db: Database, store: ContentStore, node: PacsNode, view: RetrievalView, progress: _Progress
) -> int:
    source = _dicomweb(node)
    studies = source.find_studies(
        study_instance_uid=view.study_instance_uid, accession_number=view.accession_number
    )
    _found(db, node, view, studies)
    remotes = [r for study in studies for r in source.instances(study)]
    _update(db, view.id, total=len(remotes))
    for remote in remotes:
        try:
            progress.count(ok=_ingest(db, store, node, source.fetch(remote)))
        except dicom_io.DicomIOError as exc:
            progress.count(ok=False)
            logger.warning("PACS retrieval %d: an instance failed: %s", view.id, exc)
    return len(remotes)


def _cstore_status(db: Database, store: ContentStore, node: PacsNode, data: bytes) -> int:
    """The C-STORE status RadCheck answers for one instance the PACS sends during a C-GET."""
    try:
        return Status.SUCCESS if _ingest(db, store, node, data) else Status.DUPLICATE_SOP_INSTANCE
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
) -> int:
    source = _dimse(node, calling_ae_title)
    studies = source.find_studies(
        study_instance_uid=view.study_instance_uid, accession_number=view.accession_number
    )
    _found(db, node, view, studies)
    listing = {study: source.instances(study) for study in studies}
    total = sum(len(v) for v in listing.values())
    _update(db, view.id, total=total)
    for study, instances in listing.items():
        if view.method == "c-get":

            def received(data: bytes) -> int:
                status = _cstore_status(db, store, node, data)
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
            _update(db, view.id, stored=progress.stored, failed=progress.failed)
    return total


def _found(db: Database, node: PacsNode, view: RetrievalView, studies: list[str]) -> None:
    if not studies:
        what = view.study_instance_uid or f"accession number {view.accession_number}"
        raise dicom_io.DicomIOError(f"The PACS {node.name!r} has no study {what}.")
    _update(db, view.id, studies=studies)


def run_retrieval(
    db: Database,
    store: ContentStore,
    node: PacsNode,
    retrieval_id: int,
    *,
    calling_ae_title: str,
) -> RetrievalView:
    """Run one retrieval to the end; failures are recorded on the job, never raised.

    ``calling_ae_title`` is RadCheck's AE title towards a DIMSE node, and the C-MOVE destination.
    """
    view = db.run(lambda s: get_retrieval(s, retrieval_id))
    _update(db, retrieval_id, status=JobStatus.RUNNING, started_at=utcnow())
    progress = _Progress(db, retrieval_id)
    try:
        if view.method == "dicomweb":
            total = _pull_dicomweb(db, store, node, view, progress)
        else:
            total = _pull_dimse(db, store, node, view, progress, calling_ae_title)
        failed = progress.failed
        status = JobStatus.SUCCEEDED if failed == 0 else JobStatus.FAILED
        error = None if failed == 0 else f"{failed} of {total} instances failed"
    except dicom_io.DicomIOError as exc:
        status, error = JobStatus.FAILED, str(exc)
    except Exception as exc:  # a job never dies silently: the error is kept on the row
        logger.exception("PACS retrieval %d failed", retrieval_id)
        status, error = JobStatus.FAILED, f"internal error: {type(exc).__name__}"
    _update(
        db,
        retrieval_id,
        status=status,
        error=error,
        stored=progress.stored,
        failed=progress.failed,
        finished_at=utcnow(),
    )
    return db.run(lambda s: get_retrieval(s, retrieval_id))
