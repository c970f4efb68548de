"""`radcheck dicom listen`: the C-STORE listener as its own process, fed by dcmtk's storescu."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select

from app.db.models import AuditEvent, Instance
from app.db.session import Database
from app.settings import Settings
from tests.app.dicomweb_support import (
    AET,
    SENDER,
    Listener,
    copy_with_new_uids,
    dicom_file,
    wait_until,
)

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")


@pytest.fixture
def listener(sqlite_settings: Settings) -> Iterator[Listener]:
    server = Listener(sqlite_settings)
    try:
        yield server
    finally:
        server.stop()


def rows(settings: Settings) -> dict[str, Instance]:
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            found = session.scalars(select(Instance)).all()
            session.expunge_all()
            return {r.sop_instance_uid: r for r in found}
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("CT_small.dcm", None),
        ("MR_small_jp2klossless.dcm", "-xv"),
        ("SC_rgb_jpeg_dcmtk.dcm", "-xy"),
        ("JPEG-LL.dcm", "-xs"),
        ("SC_rgb_rle.dcm", "-xr"),
    ],
)
def test_storescu_sends_are_stored_as_received(
    listener: Listener, sqlite_settings: Settings, name: str, flag: str | None
) -> None:
    path = dicom_file(name)
    original = pydicom.dcmread(path)
    result = listener.storescu(*([flag] if flag else []), str(path))
    assert result.returncode == 0, result.stderr
    assert "Received Store Response (Success)" in result.stderr
    row = rows(sqlite_settings)[original.SOPInstanceUID]
    assert row.source == "dimse"
    assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID  # compressed stays so
    stored = pydicom.dcmread(sqlite_settings.files_dir / row.storage_path)
    assert stored.PixelData == original.PixelData


def test_folder_send_and_wrong_calling_ae(
    listener: Listener, sqlite_settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "study"
    (folder / "sub").mkdir(parents=True)
    ct = pydicom.dcmread(dicom_file("CT_small.dcm"))
    copies = [copy_with_new_uids(ct, study_uid=ct.StudyInstanceUID) for _ in range(3)]
    for i, ds in enumerate(copies):
        ds.save_as(folder / ("sub" if i else ".") / f"img{i}.dcm", enforce_file_format=True)
    result = listener.storescu("+sd", "+r", str(folder))
    assert result.returncode == 0, result.stderr
    assert {ds.SOPInstanceUID for ds in copies} <= set(rows(sqlite_settings))

    refused = listener.storescu(str(dicom_file("MR_small.dcm")), aet="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr
    assert pydicom.dcmread(dicom_file("MR_small.dcm")).SOPInstanceUID not in rows(sqlite_settings)
    db = Database(sqlite_settings.database_url)
    with db.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "association.rejected")
        ).all()
        assert [e.details["calling_ae"] for e in events] == ["INTRUDER"]
        assert events[0].details["reason"] == "calling AE title not on the allow-list"
    db.dispose()
    wrong_called = subprocess.run(
        [
            "storescu",
            "-aet",
            SENDER,
            "-aec",
            "SOMEONE",
            "127.0.0.1",
            str(listener.port),
            str(dicom_file("MR_small.dcm")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr


def test_bad_instances_get_a_status_not_a_dropped_association(
    listener: Listener, sqlite_settings: Settings
) -> None:
    ct = pydicom.dcmread(dicom_file("CT_small.dcm"))
    broken = copy_with_new_uids(ct)
    del broken.StudyInstanceUID
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(CTImageStorage, ct.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=AET)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(broken)
        assert status.Status == 0xA900
        status = assoc.send_c_store(ct)  # the same association still works
        assert status.Status == 0x0000
    finally:
        assoc.release()
    assert set(rows(sqlite_settings)) == {ct.SOPInstanceUID}


def test_sigterm_mid_transfer_acknowledges_only_what_is_stored(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    server = Listener(sqlite_settings, drain_s=0.2)
    rg1 = pydicom.dcmread(dicom_file("RG1_UNCR.dcm"))
    folder = tmp_path / "big"
    folder.mkdir()
    sent = []
    for i in range(24):
        ds = copy_with_new_uids(rg1, study_uid=rg1.StudyInstanceUID)
        ds.save_as(folder / f"{i:02d}.dcm", enforce_file_format=True)
        sent.append(ds.SOPInstanceUID)
    sender = subprocess.Popen(
        [
            "storescu",
            "-v",
            "-nh",
            "-aet",
            SENDER,
            "-aec",
            AET,
            "+sd",
            "127.0.0.1",
            str(server.port),
            str(folder),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(rows(sqlite_settings)) >= 1, 60, "the first stored instance")
        server.process.send_signal(signal.SIGTERM)
        err = server.stop()
        assert server.process.returncode == 0, err
        _out, sender_log = sender.communicate(timeout=120)
    finally:
        if sender.poll() is None:
            sender.kill()
    acknowledged = sender_log.count("Received Store Response (Success)")
    stored = rows(sqlite_settings)
    assert acknowledged <= len(stored) < len(sent), "the drain deadline cut the transfer short"
    files = sqlite_settings.files_dir
    for row in stored.values():  # every stored file is complete
        assert (files / row.storage_path).stat().st_size == row.size_bytes
    leftovers = [p for p in files.rglob("*") if p.name.startswith(".incoming-")]
    assert leftovers == [], "no partial files"
