"""Helpers for the HTTP API tests: a report, an upload, waiting for a check, the error shape,
a synthetic multi-study set."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
from fastapi.testclient import TestClient

from tests.app.conftest import auth

API = "/api/v1"

REPORT = {
    "indication": "Cough.",
    "findings": "The heart size is normal. There is a small right pleural effusion. "
    "No pneumothorax.",
    "impression": "Small left pleural effusion.",
}


def upload(client: TestClient, key: str, *paths: Path, name: str = "x.dcm") -> Any:
    files = [("files", (p.name or name, p.read_bytes(), "application/dicom")) for p in paths]
    return client.post(f"{API}/instances", files=files, headers=auth(key))


def wait_for_check(
    client: TestClient, key: str, job_id: int, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"{API}/checks/{job_id}", headers=auth(key)).json()
        if body["status"] in {"succeeded", "failed"}:
            return body
        time.sleep(0.1)
    raise AssertionError(f"check {job_id} did not finish in {timeout} s")


def assert_error_shape(response: Any, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == type_
    assert body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def synthetic_study(tmp_path: Path, rg1_path: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(rg1_path)
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.543.{i + 1}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.543.{i + 1}.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.543.{i + 1}.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = f"2024010{i + 1}"
        path = tmp_path / f"s{i}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths
