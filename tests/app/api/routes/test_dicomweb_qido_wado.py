"""QIDO-RS and WADO-RS out of RadCheck's store, with dicomweb-client against a real uvicorn server."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from app.settings import Settings
from tests.app.dicomweb_support import copy_with_new_uids, dicom_file, read, serve


@pytest.fixture
def loaded(settings: Settings, keys: dict[str, str]) -> Iterator[tuple[str, DICOMwebClient]]:
    """A server holding RG1 (CR), CT_small, MR_small and a second CR in RG1's study."""
    with serve(settings) as url:
        writer = DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": keys["integration"]})
        rg1 = read("RG1_UNCR.dcm")
        extra = copy_with_new_uids(rg1, study_uid=rg1.StudyInstanceUID)
        writer.store_instances([rg1, extra, read("CT_small.dcm"), read("MR_small.dcm")])
        reader = DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": keys["radiologist"]})
        yield url, reader


def uids(results: list[dict[str, object]]) -> set[str]:
    return {pydicom.Dataset.from_json(r).StudyInstanceUID for r in results}


def test_qido_study_search_with_matching_keys(loaded: tuple[str, DICOMwebClient]) -> None:
    _url, dw = loaded
    rg1, ct, mr = read("RG1_UNCR.dcm"), read("CT_small.dcm"), read("MR_small.dcm")
    everything = dw.search_for_studies()
    assert uids(everything) == {rg1.StudyInstanceUID, ct.StudyInstanceUID, mr.StudyInstanceUID}
    by_id = dw.search_for_studies(search_filters={"PatientID": str(ct.PatientID)})
    assert uids(by_id) == {ct.StudyInstanceUID}
    assert str(ct.PatientName) == "CompressedSamples^CT1"
    wildcard = dw.search_for_studies(search_filters={"PatientName": "*^CT1"})
    assert uids(wildcard) == {ct.StudyInstanceUID}
    single = dw.search_for_studies(search_filters={"PatientName": "compressedsamples^?T1"})
    assert uids(single) == {ct.StudyInstanceUID}
    assert len(dw.search_for_studies(search_filters={"PatientName": "Compressed*"})) == 3
    assert dw.search_for_studies(search_filters={"PatientName": "CT1"}) == []
    modality = dw.search_for_studies(search_filters={"ModalitiesInStudy": "CR,DX"})
    assert uids(modality) == {rg1.StudyInstanceUID}
    date = str(ct.StudyDate)
    ranged = dw.search_for_studies(search_filters={"StudyDate": f"{date}-{date}"})
    assert ct.StudyInstanceUID in uids(ranged)
    assert dw.search_for_studies(search_filters={"StudyDate": "19000101-19000102"}) == []
    assert uids(
        dw.search_for_studies(search_filters={"StudyInstanceUID": rg1.StudyInstanceUID})
    ) == {rg1.StudyInstanceUID}
    page = dw.search_for_studies(limit=2, offset=0)
    rest = dw.search_for_studies(limit=2, offset=2)
    assert len(page) == 2 and len(rest) == 1 and uids(page).isdisjoint(uids(rest))
    (study,) = dw.search_for_studies(search_filters={"StudyInstanceUID": rg1.StudyInstanceUID})
    ds = pydicom.Dataset.from_json(study)
    assert ds.NumberOfStudyRelatedSeries == 2 and ds.NumberOfStudyRelatedInstances == 2
    assert ds.ModalitiesInStudy == "CR"


def test_qido_series_and_instances(loaded: tuple[str, DICOMwebClient]) -> None:
    url, dw = loaded
    rg1 = read("RG1_UNCR.dcm")
    series = dw.search_for_series(study_instance_uid=rg1.StudyInstanceUID)
    assert len(series) == 2
    assert {pydicom.Dataset.from_json(s).Modality for s in series} == {"CR"}
    instances = dw.search_for_instances(
        study_instance_uid=rg1.StudyInstanceUID, series_instance_uid=rg1.SeriesInstanceUID
    )
    (inst,) = [pydicom.Dataset.from_json(i) for i in instances]
    assert inst.SOPInstanceUID == rg1.SOPInstanceUID and inst.Rows == rg1.Rows
    assert len(dw.search_for_instances(study_instance_uid=rg1.StudyInstanceUID)) == 2
    ct_series = dw.search_for_series(search_filters={"Modality": "CT"})
    assert len(ct_series) == 1
    # Unsupported keys and bad values: a 400 naming the problem, never a 5xx.
    headers = dw._session.headers
    bad = httpx.get(f"{url}/dicomweb/studies", params={"Colour": "red"}, headers=headers)
    assert bad.status_code == 400 and "'Colour' is not a supported" in bad.json()["detail"]
    bad = httpx.get(f"{url}/dicomweb/studies", params={"StudyDate": "2024"}, headers=headers)
    assert bad.status_code == 400 and "YYYYMMDD" in bad.json()["detail"]
    by_tag = httpx.get(f"{url}/dicomweb/studies", params={"00080061": "CR"}, headers=headers).json()
    assert uids(by_tag) == {rg1.StudyInstanceUID}


def test_wado_instance_metadata_and_rendered(loaded: tuple[str, DICOMwebClient]) -> None:
    url, dw = loaded
    rg1 = read("RG1_UNCR.dcm")
    got = dw.retrieve_instance(rg1.StudyInstanceUID, rg1.SeriesInstanceUID, rg1.SOPInstanceUID)
    assert got.SOPInstanceUID == rg1.SOPInstanceUID
    assert got.PixelData == rg1.PixelData
    study = dw.retrieve_study(rg1.StudyInstanceUID)
    assert len(study) == 2
    meta = dw.retrieve_instance_metadata(
        rg1.StudyInstanceUID, rg1.SeriesInstanceUID, rg1.SOPInstanceUID
    )
    ds = pydicom.Dataset.from_json(meta)
    assert ds.SOPInstanceUID == rg1.SOPInstanceUID and "PixelData" not in ds
    assert len(dw.retrieve_study_metadata(rg1.StudyInstanceUID)) == 2
    png = dw.retrieve_instance_rendered(
        rg1.StudyInstanceUID,
        rg1.SeriesInstanceUID,
        rg1.SOPInstanceUID,
        media_types=("image/png",),
        params={"viewport": "256,256"},
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and max(image.size) == 256
    jpeg = dw.retrieve_instance_rendered(
        rg1.StudyInstanceUID, rg1.SeriesInstanceUID, rg1.SOPInstanceUID, media_types=("image/jpeg",)
    )
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    headers = dict(dw._session.headers)
    missing = httpx.get(
        f"{url}/dicomweb/studies/{rg1.StudyInstanceUID}/series/1.2.3/instances/1.2.3",
        headers=headers,
    )
    assert missing.status_code == 404
    other = httpx.get(
        f"{url}/dicomweb/studies/{rg1.StudyInstanceUID}",
        headers={
            **headers,
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.90",
        },
    )
    assert other.status_code == 406 and "no transcoding" in other.json()["detail"]


def test_a_compressed_instance_comes_back_as_stored(
    settings: Settings, keys: dict[str, str]
) -> None:
    with serve(settings) as url:
        dw = DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": keys["integration"]})
        j2k = read("MR_small_jp2klossless.dcm")
        dw.store_instances([j2k])
        got = dw.retrieve_instance(
            j2k.StudyInstanceUID,
            j2k.SeriesInstanceUID,
            j2k.SOPInstanceUID,
            media_types=(("application/dicom", "*"),),
        )
        assert got.file_meta.TransferSyntaxUID == j2k.file_meta.TransferSyntaxUID
        assert got.PixelData == j2k.PixelData
        assert dicom_file("MR_small_jp2klossless.dcm").stat().st_size > 0
