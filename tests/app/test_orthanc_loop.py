"""The whole loop with the shipped Orthanc routing script (deploy/orthanc/route-to-radcheck.lua):
storescu sends RG1 into Orthanc, Orthanc's OnStableStudy pushes it to RadCheck by STOW-RS, a report
is submitted, the check runs, and RadCheck's SR and text SR land back in the same study in Orthanc."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

import dicom_io
from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from app.settings import Settings
from tests.app.api_support import REPORT
from tests.orthanc import OrthancServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LUA = REPO / "deploy" / "orthanc" / "route-to-radcheck.lua"


@pytest.fixture
def radcheck_server(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], str]]:
    """Start RadCheck (uvicorn, in-process worker) on a free loopback port."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(pacs_node: dict[str, Any]) -> str:
        settings = Settings.model_validate(
            {
                "storage": {"data_dir": tmp_path / "radcheck"},
                "worker": {"poll_interval_s": 0.05, "lease_s": 5.0},
                "ingest": {"quiet_period_s": 0.2},
                "pacs": {"nodes": [{"name": "orthanc", **pacs_node}]},
                "export": {"destination": "orthanc", "mode": "auto_on_complete"},
            }
        )
        upgrade(settings.database_url)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline, "RadCheck did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)


def _poll(what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_storescu_to_orthanc_to_radcheck_and_results_back(
    orthanc_factory: Callable[..., OrthancServer],
    radcheck_server: Callable[[dict[str, Any]], str],
    rg1_path: Path,
    tmp_path: Path,
) -> None:
    orthanc = orthanc_factory(stable_age_s=1, lua_scripts=[LUA])
    radcheck = radcheck_server({"dicomweb_url": orthanc.dicomweb_url})
    db = Database(f"sqlite:///{(tmp_path / 'radcheck' / 'radcheck.db').resolve()}")
    with db.session() as session:
        _, key = create_api_key(session, name="orthanc", role="integration")
    db.dispose()
    # The "radcheck" DICOMweb server of deploy/orthanc/orthanc.json, defined at run time (its port
    # is only known now).
    with orthanc.client() as http:
        defined = http.put(
            "/dicom-web/servers/radcheck",
            json={"Url": f"{radcheck}/dicomweb/", "HttpHeaders": {"X-API-Key": key}},
        )
        assert defined.is_success, defined.text
    headers = {"X-API-Key": key}
    study_uid = str(dcmread(rg1_path, stop_before_pixels=True).StudyInstanceUID)

    # 1. A modality sends RG1 into the PACS.
    sent = subprocess.run(
        ["storescu", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port), str(rg1_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr

    # 2. Orthanc's OnStableStudy pushes it to RadCheck (STOW-RS).
    with httpx.Client(base_url=radcheck, headers=headers, timeout=30) as api:
        _poll(
            "the study to reach RadCheck",
            lambda: api.get(f"/api/v1/studies/{study_uid}").status_code == 200,
            timeout=30,
        )
        # 3. The report arrives; the check runs; the export is queued when it completes.
        assert api.post(f"/api/v1/studies/{study_uid}/reports", json=REPORT).is_success
        job_id = api.post(f"/api/v1/studies/{study_uid}/checks").json()["id"]
        job = _poll(
            "the check",
            lambda: (
                body
                if (body := api.get(f"/api/v1/checks/{job_id}").json())["status"]
                in {"succeeded", "failed"}
                else None
            ),
        )
        assert job["status"] == "succeeded", job
        export = _poll(
            "the export",
            lambda: next(
                (
                    e
                    for e in api.get(f"/api/v1/checks/{job_id}/exports").json()
                    if e["status"] in {"succeeded", "failed"}
                ),
                None,
            ),
        )
        assert export["status"] == "succeeded", export

    # 4. The results are in the same study in Orthanc, and read back as the same flags.
    web = DICOMwebClient(url=orthanc.dicomweb_url)
    modalities = {s["00080060"]["Value"][0] for s in web.search_for_series(study_uid)}
    assert modalities == {"CR", "SR"}
    sr = next(o for o in export["objects"] if o["kind"] == "measurement_report")
    ds = web.retrieve_instance(study_uid, sr["series_instance_uid"], sr["sop_instance_uid"])
    assert [f.kind for f in dicom_io.read_flags(ds)] == [f["subtype"] for f in job["flags"]]
    assert ds.VerificationFlag == "UNVERIFIED"
