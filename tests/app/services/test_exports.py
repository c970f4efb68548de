"""Results back to a real (throw-away) Orthanc: TID 1500 SR, text SR and GSPS in the checked study,
by STOW-RS and by C-STORE, retried with the error kept when the PACS is down."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import select

import dicom_io
from app.api import create_app
from app.db.migrate import upgrade
from app.db.models import AuditEvent, ExportJob, Flag
from app.db.session import Database
from app.services.auth import create_api_key
from app.settings import PacsSettings, Settings
from app.worker.exports import ExportRunner
from tests.app.api_support import API, REPORT, upload, wait_for_check
from tests.app.conftest import auth
from tests.orthanc import OrthancServer, free_port

pytestmark = pytest.mark.integration

BOX = [120.0, 300.0, 900.0, 1100.0]
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.22"}  # Comp 3D, Enhanced
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"


def export_settings(data_dir: Path, node: dict[str, Any], **export: Any) -> Settings:
    settings = Settings.model_validate(
        {
            "storage": {"data_dir": data_dir},
            "worker": {"poll_interval_s": 0.05, "lease_s": 5.0},
            "ingest": {"quiet_period_s": 0.05},
            "pacs": {"nodes": [{"name": "pacs", **node}]},
            "export": {"destination": "pacs", "retry_backoff_s": 0, **export},
        }
    )
    upgrade(settings.database_url)
    return settings


def keys_for(settings: Settings) -> dict[str, str]:
    db = Database(settings.database_url)
    out: dict[str, str] = {}
    with db.session() as session:
        for role in ("integration", "radiologist"):
            _, out[role] = create_api_key(session, name=f"t-{role}", role=role)
    db.dispose()
    return out


@pytest.fixture
def app_factory() -> Iterator[Callable[..., tuple[TestClient, dict[str, str]]]]:
    clients: list[TestClient] = []

    def start(settings: Settings, **kwargs: Any) -> tuple[TestClient, dict[str, str]]:
        keys = keys_for(settings)
        client = TestClient(create_app(settings, **kwargs))
        client.__enter__()
        clients.append(client)
        return client, keys

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def checked_study(
    client: TestClient, keys: dict[str, str], rg1_path: Path, report: dict[str, str] = REPORT
) -> dict[str, Any]:
    integ = keys["integration"]
    uid = upload(client, integ, rg1_path).json()["accepted"][0]["study_instance_uid"]
    assert client.post(f"{API}/studies/{uid}/reports", json=report, headers=auth(integ)).is_success
    job_id = client.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()["id"]
    job = wait_for_check(client, integ, job_id, timeout=60)
    assert job["status"] == "succeeded", job
    assert job["flags"], "the sample report should raise flags (left/right effusion)"
    return job


def give_first_flag_a_box(settings: Settings, job_id: int) -> None:
    """Grounding boxes come from a model backend; tests run without one, so put one in place."""
    db = Database(settings.database_url)
    with db.session() as session:
        flag = session.scalars(select(Flag).where(Flag.check_job_id == job_id).order_by(Flag.id))
        first = next(iter(flag))
        first.evidence = {**first.evidence, "boxes": [{"box": BOX, "space": "original_pixels"}]}
    db.dispose()


def wait_for_export(client: TestClient, key: str, export_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"{API}/exports/{export_id}", headers=auth(key)).json()
        if body["status"] in {"succeeded", "failed"}:
            return body
        time.sleep(0.05)
    raise AssertionError(f"export {export_id} did not finish in 60 s")


def orthanc_series(orthanc: OrthancServer, study_uid: str) -> dict[str, list[str]]:
    """Modality -> SOP Class UIDs of the study's instances in Orthanc (QIDO-RS)."""
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    found: dict[str, list[str]] = {}
    for series in client.search_for_series(study_uid):
        modality = series["00080060"]["Value"][0]
        uid = series["0020000E"]["Value"][0]
        for instance in client.search_for_instances(study_uid, uid):
            found.setdefault(modality, []).append(instance["00080016"]["Value"][0])
    return found


def test_export_by_stow_rs_lands_sr_text_sr_and_gsps_in_the_study(
    app_factory: Callable[..., tuple[TestClient, dict[str, str]]],
    orthanc: OrthancServer,
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    settings = export_settings(tmp_path / "data", {"dicomweb_url": orthanc.dicomweb_url})
    client, keys = app_factory(settings)
    integ = keys["integration"]
    job = checked_study(client, keys, rg1_path)
    give_first_flag_a_box(settings, job["id"])
    response = client.post(f"{API}/checks/{job['id']}/export", headers=auth(integ))
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["ai_generated"] is True and queued["verification_status"] == "unverified"
    assert queued["method"] == "stow-rs" and queued["trigger"] == "manual"
    done = wait_for_export(client, integ, queued["id"])
    assert done["status"] == "succeeded", done
    assert done["error"] is None and done["attempts"] == 1
    assert [o["kind"] for o in done["objects"]] == [
        "measurement_report",
        "text_report",
        "presentation_state",
    ]

    study_uid = dcmread(rg1_path, stop_before_pixels=True).StudyInstanceUID
    series = orthanc_series(orthanc, study_uid)
    assert set(series["SR"]) == SR_CLASSES and series["PR"] == [GSPS_CLASS]
    assert "CR" not in series  # only our objects were sent, into the original study

    # What Orthanc holds parses again, passes dcmtk, and carries the same flags as the API.
    web = DICOMwebClient(url=orthanc.dicomweb_url)
    objects = {o["kind"]: o for o in done["objects"]}
    retrieved = {}
    for kind, obj in objects.items():
        ds = web.retrieve_instance(study_uid, obj["series_instance_uid"], obj["sop_instance_uid"])
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        retrieved[kind] = path
    flags = dicom_io.read_flags(dcmread(retrieved["measurement_report"]))
    assert [(f.kind, f.severity) for f in flags] == [
        (f["subtype"], f["severity"]) for f in job["flags"]
    ]
    assert flags[0].box == tuple(BOX) and all(f.box is None for f in flags[1:])
    assert all(f.unverified for f in flags)
    for kind in ("measurement_report", "text_report"):
        dump = subprocess.run(
            ["dsrdump", str(retrieved[kind])], capture_output=True, text=True, timeout=60
        )
        assert dump.returncode == 0 and dump.stderr == "", dump.stderr
        assert "Verification Flag   : UNVERIFIED" in dump.stdout
        assert "Preliminary Flag    : PRELIMINARY" in dump.stdout
    check = subprocess.run(
        ["dcmpschk", str(retrieved["presentation_state"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Test passed" in check.stdout + check.stderr

    # A second export of the re-checked study: new series, predecessor referenced.
    again = client.post(f"{API}/checks/{job['id']}/export", headers=auth(integ)).json()
    second = wait_for_export(client, integ, again["id"])
    assert second["status"] == "succeeded" and second["predecessor_id"] == done["id"]
    sr_uid = next(o for o in second["objects"] if o["kind"] == "measurement_report")
    assert sr_uid["series_instance_uid"] != objects["measurement_report"]["series_instance_uid"]
    newer = web.retrieve_instance(
        study_uid, sr_uid["series_instance_uid"], sr_uid["sop_instance_uid"]
    )
    predecessor = newer.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert {i.ReferencedSOPInstanceUID for i in predecessor.ReferencedSOPSequence} == {
        objects["measurement_report"]["sop_instance_uid"],
        objects["text_report"]["sop_instance_uid"],
    }
    listed = client.get(f"{API}/checks/{job['id']}/exports", headers=auth(integ)).json()
    assert [e["id"] for e in listed] == [done["id"], second["id"]]

    db = Database(settings.database_url)
    with db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.object_type == "export_job")
            .order_by(AuditEvent.id)
        ).all()
    db.dispose()
    assert actions == ["export.requested", "export.succeeded"] * 2


def test_auto_export_by_c_store_when_the_check_completes(
    app_factory: Callable[..., tuple[TestClient, dict[str, str]]],
    orthanc: OrthancServer,
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    node = {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
    settings = export_settings(tmp_path / "data", node, mode="auto_on_complete")
    client, keys = app_factory(settings)
    job = checked_study(client, keys, rg1_path)
    deadline = time.monotonic() + 60
    exports: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        exports = client.get(
            f"{API}/checks/{job['id']}/exports", headers=auth(keys["radiologist"])
        ).json()
        if exports and exports[0]["status"] in {"succeeded", "failed"}:
            break
        time.sleep(0.05)
    assert len(exports) == 1, exports
    assert exports[0]["status"] == "succeeded", exports[0]
    assert exports[0]["method"] == "c-store" and exports[0]["trigger"] == "auto_on_complete"
    study_uid = dcmread(rg1_path, stop_before_pixels=True).StudyInstanceUID
    series = orthanc_series(orthanc, study_uid)
    assert set(series["SR"]) == SR_CLASSES and "PR" not in series  # no boxes without a model


def test_pacs_down_keeps_the_error_retries_then_fails(
    app_factory: Callable[..., tuple[TestClient, dict[str, str]]],
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    settings = export_settings(
        tmp_path / "data", {"dicomweb_url": dead, "timeout_s": 5}, max_attempts=2
    )
    client, keys = app_factory(settings)
    job = checked_study(client, keys, rg1_path)
    queued = client.post(f"{API}/checks/{job['id']}/export", headers=auth(keys["integration"]))
    done = wait_for_export(client, keys["integration"], queued.json()["id"])
    assert done["status"] == "failed" and done["attempts"] == 2
    assert "STOW-RS to" in done["error"] and "is the node up" in done["error"]
    db = Database(settings.database_url)
    with db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.object_type == "export_job")
            .order_by(AuditEvent.id)
        ).all()
    db.dispose()
    assert actions == ["export.requested", "export.attempt_failed", "export.failed"]


def test_a_failed_attempt_is_retried_once_the_pacs_is_back(
    app_factory: Callable[..., tuple[TestClient, dict[str, str]]],
    orthanc: OrthancServer,
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    settings = export_settings(tmp_path / "data", {"dicomweb_url": dead, "timeout_s": 5})
    client, keys = app_factory(settings)
    job = checked_study(client, keys, rg1_path)
    client.app.state.worker.stop()  # from here the export worker is driven by hand
    for thread in threading.enumerate():
        if thread.name == "radcheck-worker":
            thread.join(timeout=30)
    row = client.post(f"{API}/checks/{job['id']}/export", headers=auth(keys["integration"]))
    export_id = row.json()["id"]
    db = Database(settings.database_url)
    down = ExportRunner(
        db,
        files_dir=settings.files_dir,
        export=settings.export,
        pacs=settings.pacs,
        worker_id="t-down",
    )
    assert down.run_once()
    first = client.get(f"{API}/exports/{export_id}", headers=auth(keys["integration"])).json()
    assert first["status"] == "queued" and first["attempts"] == 1 and "STOW-RS" in first["error"]
    back = PacsSettings.model_validate(
        {"nodes": [{"name": "pacs", "dicomweb_url": orthanc.dicomweb_url}]}
    )
    up = ExportRunner(
        db, files_dir=settings.files_dir, export=settings.export, pacs=back, worker_id="t-up"
    )
    assert up.run_once()
    db.dispose()
    done = client.get(f"{API}/exports/{export_id}", headers=auth(keys["integration"])).json()
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["error"] is None
    assert orthanc.instance_count() == 2  # SR + text SR (no boxes: no GSPS)


def test_export_refusals_are_clear_4xx(
    app_factory: Callable[..., tuple[TestClient, dict[str, str]]],
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    plain = Settings.model_validate(
        {
            "storage": {"data_dir": tmp_path / "plain"},
            "worker": {"poll_interval_s": 0.05, "lease_s": 5.0},
            "ingest": {"quiet_period_s": 0.05},
        }
    )
    upgrade(plain.database_url)
    client, keys = app_factory(plain)
    integ = keys["integration"]
    missing = client.post(f"{API}/checks/999/export", headers=auth(integ))
    assert missing.status_code == 404 and missing.json()["type"] == "not_found"
    assert client.get(f"{API}/exports/999", headers=auth(integ)).status_code == 404
    assert client.get(f"{API}/checks/999/exports", headers=auth(integ)).status_code == 404
    job = checked_study(client, keys, rg1_path)
    refused = client.post(f"{API}/checks/{job['id']}/export", headers=auth(integ))
    assert refused.status_code == 409, refused.text
    assert "RADCHECK_EXPORT__DESTINATION" in refused.json()["detail"]


def test_export_settings_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="export destination 'nope' is not a RADCHECK_PACS__NODES"):
        Settings.model_validate({"export": {"destination": "nope"}})
    with pytest.raises(ValueError, match="needs RADCHECK_EXPORT__DESTINATION"):
        Settings.model_validate({"export": {"mode": "after_accept"}})
    with pytest.raises(ValueError, match="'c-store' needs ae_title/host/port"):
        Settings.model_validate(
            {
                "pacs": {"nodes": [{"name": "p", "dicomweb_url": "http://x/dicom-web"}]},
                "export": {"destination": "p", "method": "c-store"},
            }
        )
    assert ExportJob.__tablename__ == "export_jobs"


def test_after_accept_exports_when_a_radiologist_accepts_and_leaves_out_dismissed_flags(
    app_factory: Callable[..., tuple[TestClient, dict[str, str]]],
    orthanc: OrthancServer,
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    settings = export_settings(
        tmp_path / "data", {"dicomweb_url": orthanc.dicomweb_url}, mode="after_accept"
    )
    client, keys = app_factory(settings)
    rad = keys["radiologist"]
    # RG1's header says patient sex F: "He" adds a header flag to the laterality flag.
    report = {**REPORT, "findings": REPORT["findings"] + " He has a cough."}
    job = checked_study(client, keys, rg1_path, report)
    assert len(job["flags"]) >= 2, job["flags"]
    assert client.get(f"{API}/checks/{job['id']}/exports", headers=auth(rad)).json() == []
    first, second = job["flags"][0], job["flags"][1]
    dismissed = client.post(
        f"{API}/flags/{second['id']}/reviews", json={"decision": "dismissed"}, headers=auth(rad)
    )
    assert dismissed.status_code == 201
    assert client.get(f"{API}/checks/{job['id']}/exports", headers=auth(rad)).json() == []
    accepted = client.post(
        f"{API}/flags/{first['id']}/reviews", json={"decision": "accepted"}, headers=auth(rad)
    )
    assert accepted.status_code == 201, accepted.text
    [export] = client.get(f"{API}/checks/{job['id']}/exports", headers=auth(rad)).json()
    assert export["trigger"] == "after_accept"
    done = wait_for_export(client, rad, export["id"])
    assert done["status"] == "succeeded", done
    sr = next(o for o in done["objects"] if o["kind"] == "measurement_report")
    ds = DICOMwebClient(url=orthanc.dicomweb_url).retrieve_instance(
        sr["study_instance_uid"], sr["series_instance_uid"], sr["sop_instance_uid"]
    )
    kept = [f for f in job["flags"] if f["id"] != second["id"]]
    assert [f.kind for f in dicom_io.read_flags(ds)] == [f["subtype"] for f in kept]
