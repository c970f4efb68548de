"""Pulling a study from a real throw-away Orthanc by accession number (API job and CLI)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
from sqlalchemy import select

from app.db.models import Instance
from app.db.session import Database
from app.settings import Settings
from tests.app.dicomweb_support import copy_with_new_uids, read, serve
from tests.orthanc import OrthancServer

REPO = Path(__file__).resolve().parents[2]


def load_orthanc(orthanc: OrthancServer, accession: str) -> list[pydicom.Dataset]:
    rg1 = read("RG1_UNCR.dcm")
    study = [copy_with_new_uids(rg1, accession=accession) for _ in range(1)]
    study += [copy_with_new_uids(study[0], study_uid=study[0].StudyInstanceUID)]
    other = copy_with_new_uids(read("CT_small.dcm"), accession="OTHER-1")
    for ds in [*study, other]:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        orthanc.upload(buffer.getvalue())
    return study


def sop_uids(settings: Settings) -> set[str]:
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            return set(session.scalars(select(Instance.sop_instance_uid)).all())
    finally:
        db.dispose()


def with_node(settings: Settings, orthanc: OrthancServer) -> Settings:
    pacs = settings.pacs.model_validate(
        {"nodes": [{"name": "orthanc", "dicomweb_url": orthanc.dicomweb_url}]}
    )
    return settings.model_copy(update={"pacs": pacs})


def test_pull_by_accession_number_through_the_api(
    sqlite_settings: Settings, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    from app.services.auth import create_api_key

    orthanc = orthanc_factory()
    study = load_orthanc(orthanc, "ACC-42")
    settings = with_node(sqlite_settings, orthanc)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="pull", role="integration")
    db.dispose()
    with serve(settings) as url:
        headers = {"X-API-Key": key}
        response = httpx.post(
            f"{url}/api/v1/pacs/retrieve", json={"accession_number": "ACC-42"}, headers=headers
        )
        assert response.status_code == 202, response.text
        job = response.json()
        deadline = time.monotonic() + 120
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = httpx.get(f"{url}/api/v1/pacs/retrievals/{job['id']}", headers=headers).json()
        assert job["status"] == "succeeded", job
        assert job["total"] == 2 and job["stored"] == 2 and job["failed"] == 0
        assert job["studies"] == [study[0].StudyInstanceUID]
        bad = httpx.post(
            f"{url}/api/v1/pacs/retrieve",
            json={"accession_number": "X", "node": "nowhere"},
            headers=headers,
        )
        assert bad.status_code == 422 and "No PACS node named 'nowhere'" in bad.json()["detail"]
        missing = httpx.post(
            f"{url}/api/v1/pacs/retrieve", json={"accession_number": "NOPE"}, headers=headers
        ).json()
        deadline = time.monotonic() + 60
        while missing["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
            missing = httpx.get(
                f"{url}/api/v1/pacs/retrievals/{missing['id']}", headers=headers
            ).json()
        assert missing["status"] == "failed" and "no study" in missing["error"]
    assert sop_uids(settings) == {ds.SOPInstanceUID for ds in study}


def test_pull_with_the_cli(
    sqlite_settings: Settings, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    orthanc = orthanc_factory(users={"radcheck": "s3cret"})
    study = load_orthanc(orthanc, "ACC-7")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RADCHECK_STORAGE__DATA_DIR": str(sqlite_settings.storage.data_dir),
        "RADCHECK_DATABASE__URL": sqlite_settings.database_url,
        "RADCHECK_PACS__NODES": json.dumps(
            [
                {
                    "name": "orthanc",
                    "dicomweb_url": orthanc.dicomweb_url,
                    "username": "radcheck",
                    "password": "s3cret",
                }
            ]
        ),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "pacs", "retrieve", "--accession", "ACC-7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["stored"] == 2
    assert sop_uids(sqlite_settings) == {ds.SOPInstanceUID for ds in study}
