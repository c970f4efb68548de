"""Every answer carries a request id: the caller's (at most 64 characters) or a new one, the same
in the error body, including refusals made before any route runs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.app.conftest import auth


def test_a_given_request_id_is_echoed_and_used_in_errors(
    client: TestClient, keys: dict[str, str]
) -> None:
    refused = client.get("/api/v1/studies", headers={"X-Request-ID": "ris-trace-42"})
    assert refused.status_code == 401  # refused by the gate, before any route
    assert refused.headers["X-Request-ID"] == "ris-trace-42"
    assert refused.json()["request_id"] == "ris-trace-42"
    missing = client.get(
        "/api/v1/studies/9.9.9", headers={**auth(keys["admin"]), "X-Request-ID": "x" * 100}
    )
    assert missing.status_code == 404
    assert missing.headers["X-Request-ID"] == "x" * 64 == missing.json()["request_id"]


def test_a_request_without_an_id_gets_a_fresh_one(client: TestClient) -> None:
    first = client.get("/api/v1/health").headers["X-Request-ID"]
    second = client.get("/api/v1/health").headers["X-Request-ID"]
    assert len(first) == 16 and first != second
    assert client.get("/api/v1/health").headers.get_list("X-Request-ID").__len__() == 1
