"""Pull studies from a configured PACS node into RadCheck (a job with progress)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from app.api.deps import DbDep, Integrator, Reader, SettingsDep
from app.api.errors import ErrorBody
from app.services.pacs_retrieve import (
    RetrievalView,
    create_retrieval,
    get_retrieval,
    resolve_node,
)

router = APIRouter(prefix="/pacs", tags=["pacs"])


class RetrieveRequest(BaseModel):
    node: str | None = Field(
        default=None,
        max_length=64,
        description="A configured node's name (RADCHECK_PACS__NODES); optional when only one",
    )
    study_instance_uid: str | None = Field(
        default=None, pattern=r"^[0-9.]{1,64}$", description="Pull this study"
    )
    accession_number: str | None = Field(
        default=None, min_length=1, max_length=16, description="Or the study with this accession"
    )


class Retrieval(BaseModel):
    id: int
    node: str
    method: str
    study_instance_uid: str | None
    accession_number: str | None
    status: str = Field(description="queued, running, succeeded or failed")
    total: int = Field(description="Instances found on the PACS")
    stored: int = Field(description="Instances stored so far (new or already here)")
    failed: int
    studies: list[str] = Field(description="Study Instance UIDs found")
    error: str | None


def _out(view: RetrievalView) -> Retrieval:
    return Retrieval.model_validate(view, from_attributes=True)


@router.post(
    "/retrieve",
    response_model=Retrieval,
    status_code=202,
    summary="Pull a study from a PACS (by Study Instance UID or accession number)",
    description="QIDO-RS finds the study on the node and WADO-RS fetches each instance (a DIMSE "
    "node: C-FIND, then C-GET on the same association or C-MOVE to RadCheck's listener); each goes "
    "through the same ingest as an upload. A worker (the in-process one of `radcheck serve`, or "
    "`radcheck worker`) runs the job under a lease, so a pull whose process died is taken over and "
    "finished. Answers at once with the queued job; follow its progress at "
    "GET /api/v1/pacs/retrievals/{id}.",
    responses={422: {"model": ErrorBody}},
)
def retrieve(
    body: RetrieveRequest,
    principal: Integrator,
    db: DbDep,
    settings: SettingsDep,
) -> Retrieval:
    node = resolve_node(settings.pacs, body.node)
    view = db.run(
        lambda s: create_retrieval(
            s,
            node,
            study_instance_uid=body.study_instance_uid,
            accession_number=body.accession_number,
            actor=principal.actor,
        )
    )
    return _out(view)


@router.get(
    "/retrievals/{retrieval_id}",
    response_model=Retrieval,
    summary="A PACS retrieval's status and progress",
    responses={404: {"model": ErrorBody}},
)
def retrieval_status(
    retrieval_id: Annotated[int, Path(ge=1, le=2**31 - 1)], principal: Reader, db: DbDep
) -> Retrieval:
    return _out(db.run(lambda s: get_retrieval(s, retrieval_id)))
