"""The throw-away Orthanc fixture itself: REST, DICOMweb (STOW/QIDO) and basic auth really work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread

from tests.orthanc import OrthancServer

pytestmark = pytest.mark.integration


def test_orthanc_rest_and_dicomweb(orthanc: OrthancServer, rg1_path: Path) -> None:
    ds = dcmread(rg1_path)
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    client.store_instances([ds])
    assert orthanc.instance_count() == 1
    studies = client.search_for_studies(search_filters={"StudyInstanceUID": ds.StudyInstanceUID})
    assert len(studies) == 1


def test_orthanc_basic_auth(orthanc_factory: Callable[..., OrthancServer]) -> None:
    server = orthanc_factory(aet="SECURE", users={"alice": "s3cret"})
    assert httpx.get(f"{server.url}/system").status_code == 401
    with server.client() as http:
        assert http.get("/system").json()["DicomAet"] == "SECURE"
