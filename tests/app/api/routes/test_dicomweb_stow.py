"""STOW-RS into RadCheck (POST /dicomweb/studies), with dicomweb-client against a real uvicorn server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from sqlalchemy import select

from app.db.models import Instance
from app.db.session import Database
from app.settings import Settings
from tests.app.dicomweb_support import copy_with_new_uids, dicom_file, read, serve

PUBLIC = "https://radcheck.example.org"
BOUNDARY = "test-boundary-7d1e"


def with_dicomweb(settings: Settings, **dicomweb: object) -> Settings:
    return settings.model_copy(
        update={
            "dicomweb": settings.dicomweb.model_copy(update={"public_base_url": PUBLIC, **dicomweb})
        }
    )


@pytest.fixture
def server(settings: Settings, keys: dict[str, str]) -> Iterator[str]:
    with serve(with_dicomweb(settings)) as url:
        yield url


def client(url: str, key: str) -> DICOMwebClient:
    return DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": key})


def stored(settings: Settings) -> dict[str, Instance]:
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            rows = session.scalars(select(Instance)).all()
            session.expunge_all()
            return {r.sop_instance_uid: r for r in rows}
    finally:
        db.dispose()


def multipart(parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for content_type, data in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


RELATED = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


def test_small_body_is_stored_and_answered_with_retrieve_urls(
    server: str, settings: Settings, keys: dict[str, str]
) -> None:
    ct, mr = read("CT_small.dcm"), read("MR_small.dcm")
    answer = client(server, keys["integration"]).store_instances([ct, mr])
    refs = answer.ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {ct.SOPInstanceUID, mr.SOPInstanceUID}
    assert {r.ReferencedSOPClassUID for r in refs} == {ct.SOPClassUID, mr.SOPClassUID}
    for ref in refs:
        assert ref.RetrieveURL.startswith(f"{PUBLIC}/dicomweb/studies/")
        assert ref.RetrieveURL.endswith(f"/instances/{ref.ReferencedSOPInstanceUID}")
    assert len(answer.get("FailedSOPSequence", [])) == 0
    rows = stored(settings)
    assert set(rows) == {ct.SOPInstanceUID, mr.SOPInstanceUID}
    assert all(r.source == "stow" for r in rows.values())
    # Same instances again: harmless, still 200 with references, one copy kept.
    again = client(server, keys["admin"]).store_instances([ct])
    assert again.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert len(stored(settings)) == 2


def test_large_chunked_body_streams_every_part_to_the_store(
    server: str, settings: Settings, keys: dict[str, str]
) -> None:
    rg1 = read("RG1_UNCR.dcm")
    datasets = [read("RG3_UNCR.dcm")] + [
        copy_with_new_uids(rg1, study_uid=rg1.StudyInstanceUID) for _ in range(4)
    ]
    # > 1 MB: dicomweb-client sends it with Transfer-Encoding: chunked, no Content-Length.
    answer = client(server, keys["integration"]).store_instances(datasets, study_instance_uid=None)
    assert len(answer.ReferencedSOPSequence) == 5
    rows = stored(settings)
    assert len(rows) == 5
    files = settings.files_dir
    for ds in datasets:
        row = rows[ds.SOPInstanceUID]
        data = (files / row.storage_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.size_bytes > 6_000_000
    incoming = settings.storage.data_dir / "incoming"
    assert not any(incoming.iterdir()), "temp part files are removed"


def test_one_bad_part_is_202_with_failed_sop_sequence(
    server: str, settings: Settings, keys: dict[str, str]
) -> None:
    ct = read("CT_small.dcm")
    broken = copy_with_new_uids(read("MR_small.dcm"))
    del broken.StudyInstanceUID  # required: the data set does not match its SOP class
    answer = client(server, keys["integration"]).store_instances([ct, broken])
    assert [r.ReferencedSOPInstanceUID for r in answer.ReferencedSOPSequence] == [ct.SOPInstanceUID]
    (failed,) = answer.FailedSOPSequence
    assert failed.FailureReason == 0xA900
    assert failed.ReferencedSOPInstanceUID == broken.SOPInstanceUID
    assert set(stored(settings)) == {ct.SOPInstanceUID}

    # Not DICOM at all, and a part that is not application/dicom: 0xC000, the good part stored.
    mr = dicom_file("MR_small.dcm").read_bytes()
    body = multipart(
        [
            ("application/dicom", b"this is not DICOM" * 20),
            ("application/dicom", mr),
            ("text/plain", b"hello"),
        ]
    )
    response = httpx.post(
        f"{server}/dicomweb/studies",
        content=body,
        headers={"Content-Type": RELATED, "X-API-Key": keys["integration"]},
    )
    assert response.status_code == 202
    assert response.headers["content-type"] == "application/dicom+json"
    result = Dataset.from_json(response.json())
    assert [f.FailureReason for f in result.FailedSOPSequence] == [0xC000, 0xC000]
    assert len(result.ReferencedSOPSequence) == 1


def test_study_uid_mismatch_fails_the_part_and_409_when_none_stored(
    server: str, settings: Settings, keys: dict[str, str]
) -> None:
    ct = read("CT_small.dcm")
    other_study = "1.2.826.0.1.3680043.8.498.1"
    with pytest.raises(requests.exceptions.HTTPError) as raised:
        client(server, keys["integration"]).store_instances([ct], study_instance_uid=other_study)
    assert raised.value.response.status_code == 409
    result = Dataset.from_json(raised.value.response.json())
    (failed,) = result.FailedSOPSequence
    assert failed.FailureReason == 0xA900
    assert failed.ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert "ReferencedSOPSequence" not in result
    assert stored(settings) == {}
    # The right study in the path: stored.
    answer = client(server, keys["integration"]).store_instances(
        [ct], study_instance_uid=ct.StudyInstanceUID
    )
    assert answer.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID


def test_wrong_media_type_is_415_and_malformed_is_400(server: str, keys: dict[str, str]) -> None:
    headers = {"X-API-Key": keys["integration"]}
    response = httpx.post(
        f"{server}/dicomweb/studies",
        content=b"{}",
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 415
    assert "multipart/related" in response.json()["detail"]
    response = httpx.post(
        f"{server}/dicomweb/studies",
        content=b"x",
        headers={**headers, "Content-Type": 'multipart/related; type="image/jpeg"; boundary=a'},
    )
    assert response.status_code == 415
    cut = multipart([("application/dicom", b"abc")])[:-10]
    response = httpx.post(
        f"{server}/dicomweb/studies",
        content=cut,
        headers={**headers, "Content-Type": RELATED},
    )
    assert response.status_code == 400
    assert "closing boundary" in response.json()["detail"]


def test_roles_and_streamed_size_limit(
    settings: Settings, keys: dict[str, str], tmp_path: Path
) -> None:
    small = with_dicomweb(settings, max_request_bytes=200_000)
    rg1 = dicom_file("RG1_UNCR.dcm").read_bytes()
    body = multipart(
        [
            ("application/dicom", dicom_file("CT_small.dcm").read_bytes()),
            ("application/dicom", rg1),
        ]
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts streamed bytes
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    with serve(small) as url:
        response = httpx.post(
            f"{url}/dicomweb/studies",
            content=multipart([("application/dicom", b"x")]),
            headers={"Content-Type": RELATED, "X-API-Key": keys["radiologist"]},
        )
        assert response.status_code == 403
        response = httpx.post(
            f"{url}/dicomweb/studies",
            content=chunks(),
            headers={"Content-Type": RELATED, "X-API-Key": keys["integration"]},
        )
        assert response.status_code == 413
        assert "RADCHECK_DICOMWEB__MAX_REQUEST_BYTES" in response.json()["detail"]
        assert "1 instances were stored" in response.json()["detail"]
    assert len(stored(settings)) == 1
