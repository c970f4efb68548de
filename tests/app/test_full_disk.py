"""A really full disk during ingest (issue 13): the file store on a size-limited tmpfs.

``tests/app/test_hostile.py`` makes one write fail part-way; here the kernel refuses the bytes. The
store's folder is a tmpfs of a few hundred KiB (``mount -t tmpfs -o size=...``, root only), filled
with real DICOM through both doors (``POST /api/v1/instances`` and STOW-RS) until it refuses. Each
refusal is a 507 in the one error shape naming the problem and the fix, leaves no partial file and
no row, and once space is freed (the tmpfs remounted bigger) the same instances are stored. A
second case puts the whole data directory (SQLite database and WAL, file store) on the tmpfs, so
the database may be the one to find the disk full.
Without permission to mount the test skips, unless RADCHECK_TEST_REQUIRE_TMPFS=1 (CI sets it),
then it fails.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from app.api import create_app
from app.db.migrate import upgrade
from app.db.models import Instance
from app.db.session import Database
from app.services.auth import create_api_key
from app.settings import Settings
from tests.app.conftest import auth, make_settings
from tests.app.dicomweb_support import dicom_file

API = "/api/v1"
UID = "1.2.826.0.1.3680043.10.545.13"
BOUNDARY = "radcheck-full-disk"


def _mount(*args: str) -> str | None:
    """Run mount(8); the reason it failed, or None."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


@contextmanager
def small_disk(path: Path, size_kib: int) -> Iterator[None]:
    """A tmpfs of ``size_kib`` KiB mounted on ``path`` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    problem = (
        f"not root (uid {os.geteuid()})"
        if os.geteuid() != 0
        else _mount("-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path))
    )
    if problem is not None:
        reason = f"cannot mount a size-limited tmpfs on {path}: {problem}"
        if os.environ.get("RADCHECK_TEST_REQUIRE_TMPFS") == "1":
            pytest.fail(f"{reason} (RADCHECK_TEST_REQUIRE_TMPFS=1: this test must run)")
        pytest.skip(reason)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True, timeout=30)


def grow(path: Path, size_kib: int) -> None:
    """Free space: the tmpfs on ``path`` remounted at ``size_kib`` KiB, its files kept."""
    problem = _mount("-o", f"remount,size={size_kib}k", str(path))
    assert problem is None, problem


def instance(index: int) -> bytes:
    """A real CT (pydicom's CT_small.dcm, about 39 KB) with its own SOP Instance UID."""
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.StudyInstanceUID = UID
    ds.SeriesInstanceUID = f"{UID}.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID}.1.{index}"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def upload(client: TestClient, key: str, data: bytes) -> Response:
    files = [("files", ("ct.dcm", data, "application/dicom"))]
    return client.post(f"{API}/instances", files=files, headers=auth(key))


def stow(client: TestClient, key: str, blobs: list[bytes]) -> Response:
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b + b"\r\n"
        for b in blobs
    )
    headers = {
        **auth(key),
        "Content-Type": f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
    }
    return client.post(
        "/dicomweb/studies", content=body + f"--{BOUNDARY}--\r\n".encode(), headers=headers
    )


def stored_uids(settings: Settings) -> set[str]:
    """The SOP Instance UIDs with a row, after checking each row's file is there and nothing else
    is: no partial file, no staged temporary, no orphan."""
    db = Database(settings.database_url)
    with db.session() as session:
        rows = session.execute(select(Instance.sop_instance_uid, Instance.storage_path)).all()
    db.dispose()
    on_disk = sorted(
        str(p.relative_to(settings.files_dir)) for p in settings.files_dir.rglob("*") if p.is_file()
    )
    assert on_disk == sorted(path for _, path in rows), on_disk
    return {uid for uid, _ in rows}


def assert_full(response: Response, *fragments: str) -> None:
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["type"] == "insufficient_storage" and body["request_id"], body
    for fragment in ("No space left", "Free disk space", "RADCHECK_STORAGE__DATA_DIR", *fragments):
        assert fragment in body["detail"], body


def test_full_tmpfs_file_store_is_507_leaves_nothing_and_recovers(
    settings: Settings, keys: dict[str, str]
) -> None:
    key = keys["integration"]
    blobs = [instance(i) for i in range(40)]
    size = len(blobs[0])
    with (
        small_disk(settings.files_dir, 256),
        TestClient(create_app(settings, run_worker=False)) as client,
    ):
        # The upload route, one instance a request, until the disk refuses one.
        sent = 0
        while True:
            assert sent < 20, (
                "a 256 KiB tmpfs took 20 instances of ~39 KB: the limit is not applied"
            )
            r = upload(client, key, blobs[sent])
            if r.status_code != 201:
                assert_full(r, f"a {size}-byte file")
                break
            sent += 1
        assert sent >= 1, "the empty tmpfs refused the first instance"
        uids = stored_uids(settings)
        assert len(uids) == sent and f"{UID}.1.{sent}" not in uids  # no row for the refused one

        # STOW-RS with room for a few more: those are stored, then the request stops with 507.
        grow(settings.files_dir, 256 + 3 * size // 1024 + 8)
        r = stow(client, key, blobs[sent : sent + 10])
        before = len(uids)
        uids = stored_uids(settings)
        stowed = len(uids) - before
        assert 1 <= stowed < 10, stowed
        assert_full(r, f"{stowed} instances of this request were stored before the disk filled")
        assert f"{UID}.1.{sent + stowed}" not in uids

        # Space freed: the refused instances go in by both doors.
        grow(settings.files_dir, 4096)
        r = upload(client, key, blobs[sent + stowed])
        assert r.status_code == 201, r.text
        r = stow(client, key, blobs[sent + stowed + 1 : sent + 10])
        assert r.status_code == 200, r.text
        assert stored_uids(settings) == {f"{UID}.1.{i}" for i in range(sent + 10)}


def test_full_tmpfs_under_sqlite_and_files_is_507_leaves_nothing_and_recovers(
    tmp_path: Path,
) -> None:
    """The whole data directory (SQLite database, its WAL, the file store) on one small tmpfs:
    whichever write finds the disk full first, the answer is a 507 and nothing is left behind."""
    data = tmp_path / "data"
    with small_disk(data, 4096):
        settings = make_settings(data)
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        with db.session() as session:
            _, key = create_api_key(session, name="pacs", role="integration")
        db.dispose()
        blobs = [instance(i) for i in range(151)]
        with TestClient(create_app(settings, run_worker=False)) as client:
            sent = 0
            while True:
                assert sent < 150, "a 4 MiB tmpfs took 150 instances of ~39 KB"
                r = upload(client, key, blobs[sent])
                if r.status_code != 201:
                    assert_full(r)
                    break
                sent += 1
            uids = stored_uids(settings)  # no file without a row, even when COMMIT failed
            assert len(uids) == sent and f"{UID}.1.{sent}" not in uids
            # STOW-RS on the full disk: its part's temp file, the store or the database refuses.
            r = stow(client, key, blobs[sent : sent + 3])
            stowed = len(stored_uids(settings)) - sent
            assert_full(r, f"{stowed} instances of this request were stored before the disk filled")
            grow(data, 16384)
            r = upload(client, key, blobs[sent + stowed])
            assert r.status_code == 201, r.text
            r = stow(client, key, blobs[sent + stowed + 1 : sent + 3])
            assert r.status_code == 200, r.text
            assert stored_uids(settings) == {f"{UID}.1.{i}" for i in range(sent + 3)}
