"""A site's edited rules file (RADCHECK_INGEST__SELECTION_RULES) decides eligibility at the doors,
not only in selection: an RG-modality chest image, refused by the packaged policy, becomes
eligible for the model when the site's copy allows RG (issue 9, item 4)."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import pydicom
import yaml
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.services.auth import create_api_key
from tests.app.conftest import auth, make_settings

REFUSED = "modality RG is not a radiograph (CR or DX expected)"


def rg_copy(rg1_path: Path) -> bytes:
    ds = pydicom.dcmread(rg1_path)
    ds.Modality = "RG"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        generate_uid(),
        generate_uid(),
        generate_uid(),
    )
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def upload(tmp_path: Path, name: str, data: bytes, rules_file: Path | None) -> dict[str, object]:
    settings = make_settings(tmp_path / name)
    settings.ingest.selection_rules = rules_file
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="ris", role="integration")
    db.dispose()
    with TestClient(create_app(settings, run_worker=False)) as client:
        r = client.post(
            "/api/v1/instances",
            files=[("files", ("rg.dcm", data, "application/dicom"))],
            headers=auth(key),
        )
    assert r.status_code == 201, r.text
    accepted: dict[str, object] = r.json()["accepted"][0]
    return accepted


def test_the_sites_rules_file_decides_eligibility_at_upload(rg1_path: Path, tmp_path: Path) -> None:
    data = rg_copy(rg1_path)
    packaged = upload(tmp_path, "packaged", data, None)
    assert packaged["eligible_for_model"] is False and packaged["reasons"] == [REFUSED]

    spec = yaml.safe_load(
        resources.files("dicom_io").joinpath("data/default_selection.yaml").read_text("utf-8")
    )
    (modality,) = [r for r in spec["eligibility"] if "Modality" in r["require"]]
    modality["require"]["Modality"]["in"].append("RG")
    site = tmp_path / "site_selection.yaml"
    site.write_text(yaml.safe_dump(spec), encoding="utf-8")
    edited = upload(tmp_path, "site", data, site)
    assert edited["eligible_for_model"] is True and edited["reasons"] == []
