"""Liveness and readiness (no API key: load balancers and orchestrators call these)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import DbDep, SettingsDep
from app.api.schemas import HealthOut, ReadinessOut
from app.db.migrate import current_revision, head_revision
from app.services.heartbeats import worker_alive

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, summary="Liveness: the process answers")
def health() -> HealthOut:
    return HealthOut()


@router.get(
    "/ready",
    response_model=ReadinessOut,
    summary="Readiness: database reachable, schema current, a worker alive",
    responses={503: {"model": ReadinessOut, "description": "Not ready (see detail)"}},
)
def ready(request: Request, db: DbDep, settings: SettingsDep) -> JSONResponse:
    detail: list[str] = []
    database = schema = alive = False
    try:
        with db.session() as session:
            session.execute(text("SELECT 1"))
            database = True
            alive = worker_alive(session, within=timedelta(seconds=settings.worker.alive_after_s))
        schema = current_revision(db.engine) == head_revision(db.url)
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        detail.append("database unreachable")
    if database and not schema:
        detail.append("database schema outdated: run `radcheck db upgrade`")
    if database and not alive:
        detail.append("no check worker seen recently: start `radcheck worker`")
    ok = database and schema and alive
    body = ReadinessOut(
        status="ready" if ok else "not_ready",
        database=database,
        schema_current=schema,
        worker_alive=alive,
        detail=detail,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
