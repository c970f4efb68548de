"""The role matrix, generated from the app's own OpenAPI document.

ROLE_MATRIX is the one table of who may call what. Every route and method the app serves must have
a row: a route added without one fails ``test_every_route_is_in_the_role_matrix`` with the exact
line to add. Each route is then called with no credential, a malformed one, an unknown one, a
revoked one and each role's key; a grant the table does not list is a failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from app.api import create_app
from app.db.models import Role
from app.db.session import Database
from app.services.auth import create_api_key, revoke_api_key
from app.settings import Settings

PUBLIC = frozenset({"public"})
"""No credential needed (health and readiness probes, login)."""
ALL = frozenset(Role)
ADMIN = frozenset({Role.ADMIN})
INTEGRATION = frozenset({Role.ADMIN, Role.INTEGRATION})
RADIOLOGIST = frozenset({Role.ADMIN, Role.RADIOLOGIST})

ROLE_MATRIX: dict[tuple[str, str], frozenset[Any]] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("GET", "/api/v1/ready"): PUBLIC,
    ("GET", "/api/v1/docs"): PUBLIC,  # switchable: RADCHECK_API__DOCS
    ("GET", "/api/v1/docs/swagger-ui-bundle.js"): PUBLIC,  # its assets, served locally
    ("GET", "/api/v1/docs/swagger-ui.css"): PUBLIC,
    ("POST", "/api/v1/instances"): INTEGRATION,
    ("GET", "/api/v1/studies"): ALL,
    ("GET", "/api/v1/studies/{study_uid}"): ALL,
    ("POST", "/api/v1/studies/{study_uid}/reports"): INTEGRATION,
    ("POST", "/api/v1/studies/{study_uid}/checks"): ALL,
    ("GET", "/api/v1/checks/{job_id}"): ALL,
    ("POST", "/api/v1/checks/{job_id}/retry"): INTEGRATION,
    ("POST", "/api/v1/checks/{job_id}/export"): ALL,
    ("GET", "/api/v1/checks/{job_id}/exports"): ALL,
    ("GET", "/api/v1/exports/{export_id}"): ALL,
    ("POST", "/api/v1/flags/{flag_id}/reviews"): RADIOLOGIST,
    ("POST", "/api/v1/check-report"): ALL,
    ("GET", "/api/v1/checks/{job_id}/groundings"): ALL,
    ("GET", "/api/v1/checks/{job_id}/groundings/{grounding_id}/heatmap.png"): ALL,
    ("GET", "/api/v1/intake/reports-waiting"): ALL,
    ("GET", "/api/v1/intake/studies-waiting"): ALL,
    ("POST", "/api/v1/auth/login"): PUBLIC,
    ("GET", "/api/v1/auth/me"): ALL,
    ("POST", "/api/v1/auth/logout"): ALL,
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users/{username}/disable"): ADMIN,
    ("POST", "/api/v1/users/{username}/enable"): ADMIN,
    ("GET", "/api/v1/feedback/stats"): RADIOLOGIST,
    ("GET", "/api/v1/feedback/stats.csv"): RADIOLOGIST,
    ("GET", "/api/v1/flags/{flag_id}/reviews"): ALL,
    ("GET", "/api/v1/instances/{sop_uid}/rendered"): ALL,
    ("GET", "/api/v1/studies/{study_uid}/report-diff"): ALL,
    ("GET", "/api/v1/worklist"): ALL,
    ("GET", "/api/v1/worklist/next"): ALL,
    ("POST", "/api/v1/pacs/retrieve"): INTEGRATION,
    ("GET", "/api/v1/pacs/retrievals/{retrieval_id}"): ALL,
    ("POST", "/dicomweb/studies"): INTEGRATION,
    ("POST", "/dicomweb/studies/{study_uid}"): INTEGRATION,
    ("GET", "/dicomweb/studies"): ALL,
    ("GET", "/dicomweb/series"): ALL,
    ("GET", "/dicomweb/instances"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/series"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/instances"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/metadata"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/metadata"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances"): ALL,
    ("GET", "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"): ALL,
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata",
    ): ALL,
    (
        "GET",
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered",
    ): ALL,
}
"""(METHOD, path as in the OpenAPI document) -> the roles admitted (admin is always among them)."""

THIS_FILE = "tests/app/test_role_matrix.py"


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) of the OpenAPI document, plus API routes hidden from it."""
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/api/"):
            routes |= {(method, route.path) for method in route.methods - {"HEAD"}}
    return routes


@pytest.fixture
def matrix_client(sqlite_settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    db = Database(sqlite_settings.database_url)
    creds: dict[str, str] = {}
    with db.session() as session:
        for role in Role:
            _, creds[role.value] = create_api_key(session, name=f"matrix-{role}", role=role)
        _, creds["revoked"] = create_api_key(session, name="matrix-revoked", role="admin")
    with db.session() as session:
        revoke_api_key(session, "matrix-revoked")
    db.dispose()
    creds["unknown"] = "rck_" + "A" * 43
    creds["malformed"] = "rck_ not a key;\t<>"
    with TestClient(create_app(sqlite_settings, run_worker=False)) as client:
        yield client, creds


def test_every_route_is_in_the_role_matrix(sqlite_settings: Settings) -> None:
    served = served_routes(create_app(sqlite_settings, run_worker=False))
    missing = sorted(served - ROLE_MATRIX.keys())
    stale = sorted(ROLE_MATRIX.keys() - served)
    problems = [
        f"route {method} {path} has no row in ROLE_MATRIX: add "
        f'("{method}", "{path}"): <PUBLIC|ALL|ADMIN|INTEGRATION|RADIOLOGIST>, to ROLE_MATRIX in '
        f"{THIS_FILE} (the roles that may call it)"
        for method, path in missing
    ] + [
        f"ROLE_MATRIX in {THIS_FILE} lists {method} {path}, which the app does not serve: "
        "remove the row"
        for method, path in stale
    ]
    assert not problems, "\n".join(problems)


def _concrete(path: str) -> str:
    """A callable URL for a templated path (ids and UIDs that need not exist)."""
    path = re.sub(r"\{[^}]*(id|uid)[^}]*\}", lambda m: "1" if m.group(1) == "id" else "1.2.3", path)
    return path.replace("{username}", "nobody")


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> int:
    kwargs: dict[str, Any] = {"headers": headers}
    if method in {"POST", "PUT", "PATCH"}:
        kwargs["json"] = {}
    return client.request(method, _concrete(path), **kwargs).status_code


def test_role_matrix_is_enforced(matrix_client: tuple[TestClient, dict[str, str]]) -> None:
    client, creds = matrix_client
    unexpected: list[str] = []
    tried = 0
    for (method, path), allowed in sorted(ROLE_MATRIX.items()):
        public = allowed == PUBLIC
        attempts: dict[str, dict[str, str]] = {
            "none": {},
            "malformed": {"X-API-Key": creds["malformed"]},
            "malformed-bearer": {"Authorization": "Bearer " + creds["malformed"]},
            "unknown": {"X-API-Key": creds["unknown"]},
            "revoked": {"Authorization": "Bearer " + creds["revoked"]},
        } | {role.value: {"X-API-Key": creds[role.value]} for role in Role}
        for who, headers in attempts.items():
            status = _call(client, method, path, headers)
            tried += 1
            if status >= 500 and status != 503:  # 503: not ready (no worker), not a crash
                unexpected.append(f"{method} {path} as {who}: {status} (a server error)")
            elif public:
                if status in (401, 403):
                    unexpected.append(f"{method} {path} is public but answered {who} {status}")
            elif who in {r.value for r in allowed}:
                if status in (401, 403):
                    unexpected.append(f"{method} {path} refused {who} ({status}); it is allowed")
            elif who in {r.value for r in Role}:
                if status != 403:
                    unexpected.append(f"{method} {path} granted {who} ({status}); expected 403")
            elif status != 401:
                unexpected.append(f"{method} {path} granted credential {who} ({status}); want 401")
    assert tried == len(ROLE_MATRIX) * (5 + len(Role))
    assert not unexpected, f"{len(unexpected)} of {tried} calls:\n" + "\n".join(unexpected)
