"""The HTTP API end to end on a real database (SQLite and PostgreSQL), real DICOM, real checker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from tests.app.api_support import (
    API,
    REPORT,
    assert_error_shape,
    synthetic_study,
    upload,
    wait_for_check,
)
from tests.app.conftest import auth


def test_health_needs_no_key(client: TestClient) -> None:
    assert client.get(f"{API}/health").json() == {"status": "ok"}


def test_ready_reports_database_schema_and_worker(client: TestClient) -> None:
    body = client.get(f"{API}/ready").json()
    assert body["database"] and body["schema_current"] and body["worker_alive"]
    assert body["status"] == "ready"


def test_missing_unknown_and_wrong_role_keys(
    client: TestClient, keys: dict[str, str], rg1_path: Path
) -> None:
    body = assert_error_shape(client.get(f"{API}/studies"), 401, "unauthorized")
    assert "X-API-Key" in body["detail"]
    assert_error_shape(client.get(f"{API}/studies", headers=auth("rck_nope")), 401, "unauthorized")
    bearer = {"Authorization": f"Bearer {keys['radiologist']}"}
    assert client.get(f"{API}/studies", headers=bearer).status_code == 200
    body = assert_error_shape(upload(client, keys["radiologist"], rg1_path), 403, "forbidden")
    assert "integration" in body["detail"]


def test_full_flow_upload_report_check_flags(
    client: TestClient, keys: dict[str, str], rg1_path: Path, settings: Settings
) -> None:
    integ = keys["integration"]
    first = upload(client, integ, rg1_path)
    assert first.status_code == 201, first.text
    accepted = first.json()["accepted"][0]
    assert accepted["stored"] is True
    study_uid = accepted["study_instance_uid"]
    # The same instance again: one stored copy.
    again = upload(client, integ, rg1_path)
    assert again.status_code == 200 and again.json()["accepted"][0]["stored"] is False
    stored_files = [p for p in settings.files_dir.rglob("*") if p.is_file()]
    assert len(stored_files) == 1
    assert stored_files[0].read_bytes() == rg1_path.read_bytes()

    report = client.post(f"{API}/studies/{study_uid}/reports", json=REPORT, headers=auth(integ))
    assert report.status_code == 201, report.text
    assert report.json()["version"] == 1

    requested = client.post(f"{API}/studies/{study_uid}/checks", headers=auth(integ))
    assert requested.status_code == 202, requested.text
    job = wait_for_check(client, integ, requested.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["verdict_simple"] == "Y"
    assert job["selection"]["chosen"] == accepted["sop_instance_uid"]
    subtypes = {f["subtype"] for f in job["flags"]}
    assert "laterality" in subtypes
    for flag in job["flags"]:
        assert flag["ai_generated"] is True and flag["verification_status"] == "unverified"
        assert flag["message"] and flag["rule_id"] and flag["evidence"]
    assert "Unverified AI output" in job["notice"]

    detail = client.get(f"{API}/studies/{study_uid}", headers=auth(keys["radiologist"])).json()
    assert [i["sop_instance_uid"] for i in detail["images"]] == [accepted["sop_instance_uid"]]
    assert detail["images"][0]["header"]["view_position"] == "PA"
    assert [r["version"] for r in detail["reports"]] == [1]
    assert detail["checks"][0]["flags"] == job["flags"]
    assert detail["status"] == "checked"


def test_corrected_report_is_a_new_version(
    client: TestClient, keys: dict[str, str], rg1_path: Path
) -> None:
    integ = keys["integration"]
    study_uid = upload(client, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
    url = f"{API}/studies/{study_uid}/reports"
    assert client.post(url, json=REPORT, headers=auth(integ)).json()["version"] == 1
    raw = {
        "text": "FINDINGS: The lungs are clear. No pleural effusion.\n\nIMPRESSION: Normal chest."
    }
    second = client.post(url, json=raw, headers=auth(integ)).json()
    assert second["version"] == 2
    assert second["findings"].startswith("The lungs are clear")
    assert second["impression"].startswith("Normal chest")
    detail = client.get(f"{API}/studies/{study_uid}", headers=auth(integ)).json()
    assert [r["version"] for r in detail["reports"]] == [1, 2]


def test_non_dicom_upload_gets_clear_4xx(client: TestClient, keys: dict[str, str]) -> None:
    files = [("files", ("notes.txt", b"this is not a DICOM file at all", "text/plain"))]
    response = client.post(f"{API}/instances", files=files, headers=auth(keys["integration"]))
    body = assert_error_shape(response, 422, "invalid_dicom")
    assert "DICOM" in body["detail"]


def test_mixed_upload_accepts_good_and_lists_bad(
    client: TestClient, keys: dict[str, str], rg1_path: Path
) -> None:
    files = [
        ("files", ("rg1.dcm", rg1_path.read_bytes(), "application/dicom")),
        ("files", ("broken.dcm", rg1_path.read_bytes()[:2000], "application/dicom")),
    ]
    response = client.post(f"{API}/instances", files=files, headers=auth(keys["integration"]))
    assert response.status_code == 202, response.text
    body = response.json()
    assert len(body["accepted"]) == 1
    assert body["rejected"][0]["filename"] == "broken.dcm"
    assert body["rejected"][0]["detail"]


def test_report_and_check_errors(client: TestClient, keys: dict[str, str], rg1_path: Path) -> None:
    integ = keys["integration"]
    assert_error_shape(
        client.post(f"{API}/studies/1.2.3/reports", json=REPORT, headers=auth(integ)),
        404,
        "not_found",
    )
    study_uid = upload(client, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
    body = assert_error_shape(
        client.post(f"{API}/studies/{study_uid}/reports", json={}, headers=auth(integ)),
        422,
        "invalid_input",
    )
    assert "findings" in body["detail"]
    assert_error_shape(
        client.post(f"{API}/studies/{study_uid}/reports", json={"bogus": 1}, headers=auth(integ)),
        422,
        "invalid_input",
    )
    body = assert_error_shape(
        client.post(f"{API}/studies/{study_uid}/checks", headers=auth(integ)), 404, "not_found"
    )
    assert "submit one" in body["detail"]
    assert_error_shape(
        client.post(f"{API}/checks/999/retry", headers=auth(integ)), 404, "not_found"
    )
    assert_error_shape(
        client.get(f"{API}/studies?limit=0", headers=auth(integ)), 422, "invalid_input"
    )


def test_list_filters_and_pagination(
    client: TestClient, keys: dict[str, str], rg1_path: Path, tmp_path: Path
) -> None:
    integ = keys["integration"]
    paths = synthetic_study(tmp_path, rg1_path, 3)
    assert upload(client, integ, *paths).status_code == 201
    page = client.get(f"{API}/studies?limit=2", headers=auth(integ)).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    rest = client.get(f"{API}/studies?limit=2&offset=2", headers=auth(integ)).json()
    seen = {i["study_instance_uid"] for i in page["items"] + rest["items"]}
    assert len(seen) == 3
    dated = client.get(
        f"{API}/studies?date_from=2024-01-02&date_to=2024-01-02", headers=auth(integ)
    ).json()
    assert [i["study_date"] for i in dated["items"]] == ["20240102"]
    # Check the first study; it then has flags, the others have none.
    uid = "1.2.826.0.1.3680043.10.543.1"
    client.post(f"{API}/studies/{uid}/reports", json=REPORT, headers=auth(integ))
    job = client.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()
    assert wait_for_check(client, integ, job["id"])["status"] == "succeeded"
    flagged = client.get(f"{API}/studies?has_flags=true", headers=auth(integ)).json()
    assert [i["study_instance_uid"] for i in flagged["items"]] == [uid]
    assert flagged["items"][0]["open_flags"] >= 1
    unflagged = client.get(f"{API}/studies?has_flags=false", headers=auth(integ)).json()
    assert unflagged["total"] == 2
    checked = client.get(f"{API}/studies?status=checked", headers=auth(integ)).json()
    assert [i["study_instance_uid"] for i in checked["items"]] == [uid]


def test_review_a_flag(client: TestClient, keys: dict[str, str], rg1_path: Path) -> None:
    integ, rad = keys["integration"], keys["radiologist"]
    uid = upload(client, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
    client.post(f"{API}/studies/{uid}/reports", json=REPORT, headers=auth(integ))
    job = wait_for_check(
        client, integ, client.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()["id"]
    )
    flag_id = job["flags"][0]["id"]
    url = f"{API}/flags/{flag_id}/reviews"
    assert_error_shape(
        client.post(url, json={"decision": "accepted"}, headers=auth(integ)), 403, "forbidden"
    )
    review = client.post(url, json={"decision": "dismissed", "comment": "ok"}, headers=auth(rad))
    assert review.status_code == 201 and review.json()["reviewer"] == "apikey:test-radiologist"
    after = client.get(f"{API}/checks/{job['id']}", headers=auth(rad)).json()
    reviewed = next(f for f in after["flags"] if f["id"] == flag_id)
    assert reviewed["verification_status"] == "reviewed"
    assert reviewed["reviews"][0]["decision"] == "dismissed"


def test_check_report_endpoint(client: TestClient, keys: dict[str, str]) -> None:
    body = {
        "findings": "There is a small left pleural effusion.",
        "impression": "Small right pleural effusion.",
        "header": {"patient_sex": "F", "view_position": "PA"},
    }
    response = client.post(f"{API}/check-report", json=body, headers=auth(keys["integration"]))
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["verdict_simple"] == "Y"
    assert any(f["subtype"] == "laterality" for f in out["flags"])
    assert "Unverified AI output" in out["notice"]
    bad = client.post(f"{API}/check-report", json={}, headers=auth(keys["integration"]))
    assert_error_shape(bad, 422, "invalid_input")


def test_openapi_is_complete(client: TestClient) -> None:
    spec = client.get(f"{API}/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/instances",
        "/api/v1/studies",
        "/api/v1/studies/{study_uid}",
        "/api/v1/studies/{study_uid}/reports",
        "/api/v1/studies/{study_uid}/checks",
        "/api/v1/checks/{job_id}",
        "/api/v1/checks/{job_id}/retry",
        "/api/v1/flags/{flag_id}/reviews",
        "/api/v1/check-report",
        "/api/v1/health",
        "/api/v1/ready",
    ):
        assert path in paths, path
    schemes = spec["components"]["securitySchemes"]
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schemes)
    assert "examples" in spec["components"]["schemas"]["ReportIn"]


def _enum_values(spec: dict[str, Any], prop: dict[str, Any]) -> set[str]:
    """The values an OpenAPI property allows (through $ref, anyOf with null, const, arrays)."""
    if "$ref" in prop:
        return _enum_values(spec, spec["components"]["schemas"][prop["$ref"].rsplit("/", 1)[1]])
    if "anyOf" in prop:
        return set().union(*(_enum_values(spec, p) for p in prop["anyOf"] if p != {"type": "null"}))
    if prop.get("type") == "array":
        return _enum_values(spec, prop["items"])
    if "const" in prop:
        return {prop["const"]}
    return set(prop.get("enum", ()))


@pytest.mark.parametrize(
    ("schema", "field", "values"),
    [
        ("FlagOut", "severity", {"info", "warning", "critical"}),
        ("FlagOut", "subtype", {"laterality", "negation", "header_mismatch"}),
        ("FlagOut", "complex_class", {"original", "insert", "remove", "substitute"}),
        ("FlagOut", "source", {"text_rule", "header_rule", "model"}),
        ("FlagOut", "verification_status", {"unverified", "reviewed"}),
        ("CheckOut", "status", {"queued", "running", "succeeded", "failed"}),
        ("CheckOut", "verdict_simple", {"Y", "N"}),
        ("GroundingOut", "status", {"ok", "no_box", "failed"}),
        ("ImageOut", "kind", {"image", "structured_report", "other"}),
        ("InstanceResult", "kind", {"image", "presentation_state"}),
        ("StudySummary", "status", {"receiving", "complete", "checked"}),
        ("ReviewOut", "decision", {"accepted", "dismissed"}),
        ("ReviewOut", "reason", {"false_positive", "other"}),
        ("ReportOut", "result_status", {"P", "F", "C", "X"}),
        ("ExportOut", "trigger", {"manual", "auto_on_complete", "after_accept"}),
        ("ExportOut", "status", {"queued", "running", "succeeded", "failed"}),
        ("UserOut", "role", {"admin", "integration", "radiologist"}),
        ("MeOut", "role", {"admin", "integration", "radiologist"}),
        ("WorklistItem", "top_severity", {"info", "warning", "critical"}),
        ("WorklistItem", "subtypes", {"laterality", "insert_finding"}),
        ("ReviewHistoryItem", "decision", {"accepted", "dismissed"}),
        ("CheckReportOut", "verdict_complex", {"original", "substitute"}),
        ("CheckedFlagOut", "severity", {"info", "warning", "critical"}),
        ("CheckedFlagOut", "subtype", {"laterality", "header_mismatch"}),
    ],
)
def test_openapi_lists_the_values_of_closed_fields(
    client: TestClient, schema: str, field: str, values: set[str]
) -> None:
    spec = client.get(f"{API}/openapi.json").json()
    allowed = _enum_values(spec, spec["components"]["schemas"][schema]["properties"][field])
    assert values <= allowed, (schema, field, allowed)


def test_openapi_check_report_flags_have_a_schema(client: TestClient) -> None:
    spec = client.get(f"{API}/openapi.json").json()
    flags = spec["components"]["schemas"]["CheckReportOut"]["properties"]["flags"]
    assert flags["items"] == {"$ref": "#/components/schemas/CheckedFlagOut"}
    flag = spec["components"]["schemas"]["CheckedFlagOut"]["properties"]
    assert {"key", "start", "end", "concept", "suggestions", "evidence"} <= set(flag)


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_server_refuses_outdated_schema(tmp_path: Path, settings: Settings) -> None:
    from app.api import create_app
    from app.db.migrate import SchemaOutdatedError, downgrade
    from tests.app.conftest import make_settings

    fresh = make_settings(tmp_path / "fresh")
    with pytest.raises(SchemaOutdatedError, match="radcheck db upgrade"):
        create_app(fresh)
    downgrade(settings.database_url, "base")
    with pytest.raises(SchemaOutdatedError, match="radcheck db upgrade"):
        create_app(settings)


def test_hostile_inputs_get_4xx_never_5xx(client: TestClient, keys: dict[str, str]) -> None:
    integ = {"X-API-Key": keys["integration"]}
    cases = [
        client.get(f"{API}/checks/2147483648", headers=integ),
        client.get(f"{API}/checks/99999999999999999999", headers=integ),
        client.get(f"{API}/studies?offset=9223372036854775808", headers=integ),
        client.get(f"{API}/studies/a%00b", headers=integ),
        client.get(f"{API}/studies/{'1' * 65}", headers=integ),
        client.post(f"{API}/flags/0/reviews", json={"decision": "accepted"}, headers=integ),
        client.post(f"{API}/studies/1.2.3/checks", json={"report_version": 2**40}, headers=integ),
        client.post(f"{API}/check-report", json={"findings": "a\u0000b"}, headers=integ),
        client.post(f"{API}/check-report", content=b"{not json", headers=integ),
        client.post(f"{API}/instances", content=b"raw", headers=integ),
        client.post(
            f"{API}/instances",
            files=[("files", ("empty.dcm", b"", "application/dicom"))],
            headers=integ,
        ),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, (response.request.url, response.text)
        body = response.json()
        assert body["type"] and body["detail"] and body["request_id"]


def test_same_uid_different_bytes_is_a_conflict(
    client: TestClient, keys: dict[str, str], rg1_path: Path, tmp_path: Path
) -> None:
    integ = keys["integration"]
    assert upload(client, integ, rg1_path).status_code == 201
    ds = pydicom.dcmread(rg1_path)
    ds.PatientName = "Changed^Name"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    response = upload(client, integ, changed)
    body = assert_error_shape(response, 409, "conflict")
    assert "different content" in body["detail"]


def test_oversized_body_is_refused_before_reading(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    too_big = settings.storage.max_upload_bytes * 8 + 1
    response = client.post(
        f"{API}/instances",
        headers={"X-API-Key": keys["integration"], "Content-Length": str(too_big)},
        content=b"x",
    )
    assert_error_shape(response, 413, "payload_too_large")


def test_reads_checks_and_reviews_are_audited(
    client: TestClient, keys: dict[str, str], rg1_path: Path, settings: Settings
) -> None:
    import sqlalchemy as sa

    integ, rad = keys["integration"], keys["radiologist"]
    uid = upload(client, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
    client.post(f"{API}/studies/{uid}/reports", json=REPORT, headers=auth(integ))
    job = wait_for_check(
        client, integ, client.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()["id"]
    )
    client.get(f"{API}/studies/{uid}", headers=auth(rad))
    flag_id = job["flags"][0]["id"]
    client.post(f"{API}/flags/{flag_id}/reviews", json={"decision": "accepted"}, headers=auth(rad))
    engine = sa.create_engine(settings.database_url)
    deadline = time.monotonic() + 5  # read events are written in batches (ReadAuditBuffer)
    while True:
        with engine.connect() as conn:
            events = conn.execute(sa.text("SELECT actor, action FROM audit_events")).all()
        seen = {(e.actor, e.action) for e in events}
        if ("apikey:test-radiologist", "study.read") in seen or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    engine.dispose()
    for expected in [
        ("apikey:test-integration", "instance.stored"),
        ("apikey:test-integration", "report.submitted"),
        ("apikey:test-integration", "check.requested"),
        ("apikey:test-radiologist", "study.read"),
        ("apikey:test-radiologist", "flag.accepted"),
    ]:
        assert expected in seen, expected
    assert any(action == "check.completed" for _, action in seen)


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_checked_within_30_s_with_default_quiet_period(
    tmp_path: Path, settings: Settings, keys: dict[str, str], rg1_path: Path
) -> None:
    """Done-when of issue 2, with the shipped defaults (the quiet period included)."""
    from app.api import create_app

    defaults = settings.model_copy(deep=True)
    defaults.ingest.quiet_period_s = Settings().ingest.quiet_period_s
    defaults.worker.poll_interval_s = Settings().worker.poll_interval_s
    start = time.monotonic()
    with TestClient(create_app(defaults)) as c:
        integ = keys["integration"]
        uid = upload(c, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
        c.post(f"{API}/studies/{uid}/reports", json=REPORT, headers=auth(integ))
        job_id = c.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()["id"]
        job = wait_for_check(c, integ, job_id, timeout=30)
    assert job["status"] == "succeeded"
    assert time.monotonic() - start < 30
