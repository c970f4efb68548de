"""Report input once (issue 9, item 1): every door takes the same fields by the same rule.

The rule (``medvlm.report_input.ReportInput``): ``text`` or the section fields, not both (a
section field next to ``text`` is refused, never dropped); FINDINGS or IMPRESSION text needed,
also inside ``text``. Pinned at the JSON report route, ``POST /check-report``, ``radcheck
check-report``, HL7 intake and the evaluation tool's rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.schemas import CheckReportIn, ReportIn
from app.cli.check import check_payload
from app.db.models import Report
from app.db.session import Database
from app.services.report_intake import IntakeConfig, receive_message
from app.services.reports import ReportSubmission
from app.settings import Settings
from eval.checker import check_row
from eval.errors import DatasetError, EvalError
from eval.records import LabelledRow, ReportRecord
from medvlm.checking import Checker
from medvlm.errors import MedVLMError
from medvlm.report_input import REPORT_FIELDS, SECTION_FIELDS, ReportInput
from tests.app.conftest import auth
from tests.app.hl7_support import dicom_bytes, ingest, new_accession, oru_v251

API = "/api/v1"
SECTIONS = {
    "findings": "Heart size is normal. Small left pleural effusion.",
    "impression": "Small left pleural effusion.",
    "indication": "Dyspnoea.",
    "technique": "PA and lateral views.",
}
TEXT = "FINDINGS: Heart size is normal. Small left pleural effusion.\nIMPRESSION: Small effusion."
NOT_BOTH = "not both: got 'text' with 'indication'"
NO_FINDINGS = "No FINDINGS or IMPRESSION section found in 'text'"

# (report fields, None when accepted or the refusal's message)
CASES: list[tuple[dict[str, Any], str | None]] = [
    (SECTIONS, None),
    ({"text": TEXT}, None),
    ({"text": TEXT, "indication": "Dyspnoea."}, NOT_BOTH),
    ({"text": "INDICATION: Dyspnoea.\nCOMPARISON: None."}, NO_FINDINGS),
    ({"indication": "Dyspnoea.", "technique": "PA."}, "neither 'findings' nor 'impression'"),
]
IDS = ["sections", "text", "text+indication", "text-without-findings", "no-findings"]


def test_every_door_lists_the_same_report_fields() -> None:
    metadata = {"accession_number", "result_status"}
    assert set(ReportIn.model_fields) == {*REPORT_FIELDS, *metadata}
    assert set(CheckReportIn.model_fields) == {*REPORT_FIELDS, *metadata, "header"}
    assert {f.name for f in dataclasses.fields(ReportSubmission)} == {*REPORT_FIELDS, *metadata}
    assert issubclass(ReportRecord, ReportInput) and issubclass(ReportSubmission, ReportInput)
    row_fields = [f.name for f in dataclasses.fields(LabelledRow)]
    assert [f for f in row_fields if f in {*REPORT_FIELDS, *SECTION_FIELDS}] == list(REPORT_FIELDS)
    assert SECTION_FIELDS == ("findings", "impression", "indication", "comparison", "technique")


@pytest.mark.parametrize(("report", "refusal"), CASES, ids=IDS)
def test_check_report_route(
    client: TestClient, keys: dict[str, str], report: dict[str, Any], refusal: str | None
) -> None:
    response = client.post(f"{API}/check-report", json=report, headers=auth(keys["integration"]))
    if refusal is None:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 422
        assert response.json()["type"] == "invalid_input"
        assert refusal in response.json()["detail"]


@pytest.mark.parametrize(("report", "refusal"), CASES, ids=IDS)
def test_report_route(
    settings: Settings,
    client: TestClient,
    keys: dict[str, str],
    report: dict[str, Any],
    refusal: str | None,
) -> None:
    data, study_uid = dicom_bytes(new_accession())
    ingest(settings, data)
    response = client.post(
        f"{API}/studies/{study_uid}/reports", json=report, headers=auth(keys["integration"])
    )
    if refusal is None:
        assert response.status_code == 201, response.text
        if "technique" in report:  # the section is stored, not dropped
            assert response.json()["technique"] == report["technique"]
    else:
        assert response.status_code == 422
        assert refusal in response.json()["detail"]


@pytest.mark.parametrize(("report", "refusal"), CASES, ids=IDS)
def test_cli_check_report(report: dict[str, Any], refusal: str | None) -> None:
    checker = Checker()
    if refusal is None:
        assert check_payload(checker, {"id": "r", **report})["id"] == "r"
    else:
        with pytest.raises(MedVLMError, match=refusal.replace("(", r"\(")):
            check_payload(checker, {"id": "r", **report})


@pytest.mark.parametrize(("report", "refusal"), CASES, ids=IDS)
def test_eval_rows(report: dict[str, Any], refusal: str | None) -> None:
    labels = {"id": "r", "label_simple": "N", "label_complex": "original"}
    if refusal == NO_FINDINGS:  # needs the parser: refused when the row is checked
        row = LabelledRow.from_dict({**labels, **report})
        with pytest.raises(EvalError, match=NO_FINDINGS):
            check_row(Checker(runtime=None), row)
    elif refusal is not None:  # the shape: refused when the dataset is read
        with pytest.raises(DatasetError, match=f"row \\(id r\\): .*{refusal}"):
            LabelledRow.from_dict({**labels, **report})
    else:
        row = LabelledRow.from_dict({**labels, **report})
        request = row.request()
        assert {k: request[k] for k in report} == report  # technique included
        assert set(request) == {*REPORT_FIELDS, "header"}
        assert "verdict_simple" in check_row(Checker(runtime=None), row)


def _oru_without(control_id: str, accession: str, loinc: tuple[bytes, ...]) -> bytes:
    message = oru_v251(control_id=control_id, accession=accession)
    return b"\r".join(
        s for s in message.split(b"\r") if not any(s.startswith(b"OBX|") and c in s for c in loinc)
    )


def test_hl7_intake(sqlite_settings: Settings) -> None:
    """HL7 carries the report as one text: its FINDINGS/IMPRESSION rule is the API's."""
    db = Database(sqlite_settings.database_url)
    data, _ = dicom_bytes(accession := new_accession())
    ingest(sqlite_settings, data)
    try:
        # only the reason-for-study OBX: no FINDINGS or IMPRESSION in the text
        refused = receive_message(
            db,
            _oru_without("D-1", accession, (b"18782-3", b"19005-8")),
            config=IntakeConfig(),
            source="mllp",
        )
        assert (refused.code, refused.outcome, refused.error_code) == ("AR", "rejected", 102)
        assert NO_FINDINGS in refused.text
        stored = receive_message(
            db,
            oru_v251(control_id="D-2", accession=accession),
            config=IntakeConfig(),
            source="mllp",
        )
        assert (stored.code, stored.outcome) == ("AA", "stored")
        with db.session() as session:
            reports = session.query(Report).all()
            assert [r.indication for r in reports] == ["Dyspnoea & cough."]  # from the text
    finally:
        db.dispose()
