"""Application factory: settings, database, storage, checker and the in-process worker."""

from __future__ import annotations

import importlib.resources
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.api.deps import principal_of_request
from app.api.errors import ErrorBody, install_error_handlers
from app.api.gate import AuthGate, BodyLimit, FailedAuthMonitor, SecurityHeaders, audit_failed_auth
from app.api.request_id import RequestId
from app.api.routes import (
    auth,
    check_report,
    checks,
    dicomweb,
    exports,
    feedback,
    flags,
    groundings,
    health,
    instances,
    intake,
    pacs,
    renders,
    report_versions,
    studies,
    users,
    worklist,
)
from app.api.text_guard import TextGuard
from app.db.migrate import ensure_current
from app.db.session import Database
from app.services.audit import ReadAuditBuffer
from app.services.auth import CredentialResolver, authenticate
from app.services.factory import build_pipeline, build_text_checker
from app.services.images import RenderCache
from app.services.ingest import decode_limits
from app.services.oidc import OidcVerifier
from app.services.storage import ContentStore
from app.services.users import LoginPolicy
from app.settings import Settings
from app.worker.runner import Worker

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DICOMWEB_PREFIX = "/dicomweb/"
# Swagger UI served from this server (works offline, nothing loaded from a CDN): the assets that
# the fastapi-offline package ships (pinned in pyproject.toml; swagger-ui 5.32.6).
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
PUBLIC_ROUTES = frozenset(
    {
        ("GET", f"{API_PREFIX}/health"),
        ("GET", f"{API_PREFIX}/ready"),
        ("POST", f"{API_PREFIX}/auth/login"),
        ("GET", f"{API_PREFIX}/openapi.json"),
    }
)


def is_public(method: str, path: str, docs_prefix: str | None) -> bool:
    """Routes that need no credential; everything outside the API and DICOMweb is a 404 anyway."""
    if not path.startswith((f"{API_PREFIX}/", DICOMWEB_PREFIX)) and path != DICOMWEB_PREFIX[:-1]:
        return True
    if docs_prefix is not None and (
        path == docs_prefix or path.removeprefix(f"{docs_prefix}/") in SWAGGER_ASSETS
    ):
        return True
    return (method.upper(), path.rstrip("/") or path) in PUBLIC_ROUTES


def _asset_endpoint(name: str, media_type: str) -> Callable[[], FileResponse]:
    path = Path(str(importlib.resources.files("fastapi_offline") / "static" / name))

    def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    return asset


DESCRIPTION = """
RadCheck checks chest X-ray reports against the image and against themselves, and stores every flag
with its evidence. **Research software: every flag is unverified AI output that a radiologist must
review.** Authenticate with an API key (`X-API-Key` or `Authorization: Bearer`).
"""


def login_policy(settings: Settings) -> LoginPolicy:
    a = settings.auth
    return LoginPolicy(
        session_ttl_s=a.session_ttl_s,
        idle_timeout_s=a.idle_timeout_s,
        max_failed_logins=a.max_failed_logins,
        lockout_s=a.lockout_s,
    )


def oidc_verifier(settings: Settings) -> OidcVerifier | None:
    a = settings.auth
    if not a.oidc_issuer or not a.oidc_audience:
        return None
    return OidcVerifier(
        issuer=a.oidc_issuer,
        audience=a.oidc_audience,
        jwks_url=a.oidc_jwks_url,
        username_claim=a.oidc_username_claim,
    )


def create_app(settings: Settings, *, run_worker: bool | None = None) -> FastAPI:
    """Build the API. Refuses to start on an outdated database schema."""
    db = Database(settings.database_url, pool_size=settings.database.pool_size)
    ensure_current(db.engine, db.url)
    store = ContentStore(settings.files_dir)
    in_process = settings.worker.in_process if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker: Worker | None = None
        thread: threading.Thread | None = None
        if in_process:
            pipeline = build_pipeline(settings)  # a bad model configuration fails start-up here
            worker = Worker(
                db,
                lambda: pipeline,
                files_dir=settings.files_dir,
                lease_s=settings.worker.lease_s,
                poll_interval_s=settings.worker.poll_interval_s,
                quiet_period_s=settings.ingest.quiet_period_s,
                max_attempts=settings.worker.max_attempts,
                export=settings.export,
                pacs=settings.pacs,
                limits=decode_limits(settings),
            )
            worker.beat()
            worker.complete_quiet_studies()
            thread = worker.start_thread()
        app.state.worker = worker
        read_audit.start()
        try:
            yield
        finally:
            read_audit.stop()
            if worker is not None and thread is not None:
                worker.stop()
                thread.join(timeout=30)
            db.dispose()

    app = FastAPI(
        title="RadCheck",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # our own page below: pinned assets, switchable (RADCHECK_API__DOCS)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.store = store
    app.state.text_checker = build_text_checker()
    # Every credential kind resolves here, uncached (immediate revocation): API keys first.
    resolvers: list[CredentialResolver] = [authenticate]
    app.state.credential_resolvers = resolvers
    app.state.login_policy = login_policy(settings)
    app.state.oidc = oidc_verifier(settings)
    app.state.render_cache = RenderCache(max_entries=64)
    read_audit = ReadAuditBuffer(db)
    app.state.read_audit = read_audit
    install_error_handlers(app)

    # Middleware added last runs first. From the outside in: request id, security headers, the
    # authentication gate (401 before any body is read), the streamed body limit, the text guard.
    app.add_middleware(TextGuard)
    max_body = settings.storage.max_upload_bytes * min(settings.storage.max_upload_files, 8)
    app.add_middleware(
        BodyLimit,
        limit=max_body,
        exempt=lambda path: path.startswith(DICOMWEB_PREFIX),  # STOW-RS counts its own limit
        detail="(RADCHECK_STORAGE__MAX_UPLOAD_BYTES per file): send fewer files per request.",
    )
    docs_prefix = f"{API_PREFIX}/docs" if settings.api.docs else None
    app.add_middleware(
        AuthGate,
        resolve=principal_of_request,
        public=lambda method, path: is_public(method, path, docs_prefix),
        monitor=FailedAuthMonitor(audit_failed_auth(db)),
    )
    app.add_middleware(SecurityHeaders, docs_prefix=docs_prefix)

    app.add_middleware(RequestId)  # outermost: every answer, refusals included, carries the id

    if docs_prefix is not None:

        @app.get(docs_prefix, include_in_schema=False)
        def docs_page() -> HTMLResponse:
            return get_swagger_ui_html(
                openapi_url=f"{API_PREFIX}/openapi.json",
                title="RadCheck API",
                swagger_js_url=f"{docs_prefix}/swagger-ui-bundle.js",
                swagger_css_url=f"{docs_prefix}/swagger-ui.css",
                swagger_favicon_url="data:,",
                swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
            )

        for name, media_type in SWAGGER_ASSETS.items():
            app.add_api_route(
                f"{docs_prefix}/{name}",
                _asset_endpoint(name, media_type),
                methods=["GET"],
                include_in_schema=False,
            )

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "Missing, unknown or revoked API key"},
        403: {"model": ErrorBody, "description": "The key's role may not do this"},
        422: {"model": ErrorBody, "description": "Invalid input (names the problem and the fix)"},
    }
    api = APIRouter(prefix=API_PREFIX)
    api.include_router(health.router)
    api.include_router(auth.router)
    for module in (
        instances,
        renders,
        worklist,
        studies,
        report_versions,
        checks,
        exports,
        groundings,
        flags,
        check_report,
        intake,
        feedback,
        users,
        pacs,
    ):
        api.include_router(module.router, responses=errors)
    app.include_router(api)
    app.include_router(dicomweb.router, responses=errors)
    return app
