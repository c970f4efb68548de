"""Suggested corrections reach the API flag schema additively (issue 12.4)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from fastapi.testclient import TestClient

from app.api.schemas import FlagOut

API = "/api/v1"


def _flag(evidence: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(
        id=1,
        check_job_id=2,
        subtype="laterality",
        complex_class="substitute",
        severity="critical",
        source="text_rule",
        rule_id="text.laterality.findings_impression",
        message="m",
        section="findings",
        sentence_index=0,
        span_start=0,
        span_end=10,
        confidence=0.85,
        evidence=evidence,
        reviews=[],
        created_at=datetime.now(UTC),
    )


def test_flag_out_exposes_suggestions_from_evidence() -> None:
    suggestion = {
        "section": "findings",
        "sentence_index": 0,
        "original": "Small left effusion.",
        "suggested": "Small right effusion.",
        "change": "side: left -> right (as impression sentence 1)",
        "applied": False,
    }
    out = FlagOut.model_validate(_flag({"suggestions": [suggestion]})).model_dump()
    assert out["suggestions"] == [suggestion]
    assert out["evidence"]["suggestions"] == [suggestion]  # the old field is unchanged
    assert FlagOut.model_validate(_flag({})).model_dump()["suggestions"] == []


def test_openapi_documents_suggestions(client: TestClient) -> None:
    schema = client.get(f"{API}/openapi.json").json()["components"]["schemas"]
    assert "suggestions" in schema["FlagOut"]["properties"]
    assert schema["SuggestionOut"]["properties"]["applied"]["const"] is False
