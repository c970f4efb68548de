"""Pulling a study from a configured PACS node into RadCheck's store, as a job with progress.

``create_retrieval`` records the request; ``run_retrieval`` finds the study (by Study Instance UID
or accession number) with QIDO-RS, fetches each instance with WADO-RS and stores it through the
same ingest service as every other way in, updating ``total`` / ``stored`` / ``failed`` after each
instance so ``GET /api/v1/pacs/retrievals/{id}`` shows progress. C-GET / C-MOVE retrieval is not
implemented yet: a node configured for it is refused with a clear message.
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
from dicom_io.net import DicomWebSource

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
    if node.retrieve_method != "dicomweb":
        raise InvalidInputError(
            f"PACS node {node.name!r} is set to retrieve by {node.retrieve_method}, which RadCheck "
            "does not implement yet: give the node a dicomweb_url (retrieve 'dicomweb')."
        )
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


def run_retrieval(
    db: Database, store: ContentStore, node: PacsNode, retrieval_id: int
) -> RetrievalView:
    """Run one retrieval to the end; failures are recorded on the job, never raised."""
    view = db.run(lambda s: get_retrieval(s, retrieval_id))
    _update(db, retrieval_id, status=JobStatus.RUNNING, started_at=utcnow())
    assert node.dicomweb_url is not None
    source = DicomWebSource(
        node.dicomweb_url,
        username=node.username,
        password=node.password.get_secret_value() if node.password else None,
        bearer_token=node.bearer_token.get_secret_value() if node.bearer_token else None,
        timeout_s=node.timeout_s,
    )
    stored = failed = 0
    try:
        studies = source.find_studies(
            study_instance_uid=view.study_instance_uid, accession_number=view.accession_number
        )
        if not studies:
            what = view.study_instance_uid or f"accession number {view.accession_number}"
            raise dicom_io.DicomIOError(f"The PACS {node.name!r} has no study {what}.")
        remotes = [r for study in studies for r in source.instances(study)]
        _update(db, retrieval_id, studies=studies, total=len(remotes))
        for remote in remotes:
            try:
                data = source.fetch(remote)
                outcome = db.run(
                    partial(
                        ingest_instance,
                        store=store,
                        data=data,
                        actor=f"pacs:{node.name}",
                        source="pacs",
                    )
                )
                if outcome.conflict:
                    failed += 1
                else:
                    stored += 1
            except dicom_io.DicomIOError as exc:
                failed += 1
                logger.warning("PACS retrieval %d: an instance failed: %s", retrieval_id, exc)
            _update(db, retrieval_id, stored=stored, failed=failed)
        status = JobStatus.SUCCEEDED if failed == 0 else JobStatus.FAILED
        error = None if failed == 0 else f"{failed} of {len(remotes)} instances failed"
    except dicom_io.DicomIOError as exc:
        status, error = JobStatus.FAILED, str(exc)
    except Exception as exc:  # a job never dies silently: the error is kept on the row
        logger.exception("PACS retrieval %d failed", retrieval_id)
        status, error = JobStatus.FAILED, f"internal error: {type(exc).__name__}"
    _update(db, retrieval_id, status=status, error=error, finished_at=utcnow())
    return db.run(lambda s: get_retrieval(s, retrieval_id))
