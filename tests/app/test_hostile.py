"""Hostile input (issue 16): each attack reproduced on loopback, answered with a clear 4xx or a
bounded cost, and nothing lost or left behind."""

from __future__ import annotations

import io
import os
import re
import stat
import time
import warnings
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.api import create_app
from app.db.models import Instance, Report, Study
from app.db.session import Database
from app.services.pipeline import CheckPipeline, JobInputs
from app.services.report_intake import IntakeConfig, receive_message
from app.settings import Settings
from medvlm.checking import Checker, CheckTimeBudgetError
from medvlm.reports import parse_report
from tests.app.conftest import auth, limits_of, make_settings
from tests.app.hl7_support import oru_v251

API = "/api/v1"
UID = "1.2.826.0.1.3680043.10.545.16"
SENTENCE = "There is a small right pleural effusion without pneumothorax. "


def dicom_bytes(src: Path, index: int = 1, **values: object) -> bytes:
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = UID
    ds.SeriesInstanceUID = f"{UID}.1"
    ds.SOPInstanceUID = f"{UID}.1.{index}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the over-long values we set
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def post_files(client: TestClient, key: str, *blobs: bytes) -> object:
    files = [("files", (f"f{i}.dcm", b, "application/dicom")) for i, b in enumerate(blobs)]
    return client.post(f"{API}/instances", files=files, headers=auth(key))


def stored_files(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.files_dir.rglob("*") if p.is_file())


# --- 16.1: report size cap at every door, and a time budget per check -------------------------


def test_long_report_refused_with_413_naming_the_limit_at_every_door(
    client: TestClient, keys: dict[str, str], settings: Settings, rg1_path: Path
) -> None:
    assert post_files(client, keys["integration"], dicom_bytes(rg1_path)).status_code == 201  # type: ignore[attr-defined]
    limit = settings.checks.max_report_chars
    long_text = "FINDINGS: " + SENTENCE * (limit // len(SENTENCE) + 1)
    started = time.monotonic()
    for path, body in (
        (f"{API}/studies/{UID}/reports", {"text": long_text}),
        (f"{API}/studies/{UID}/reports", {"findings": long_text, "impression": "Normal."}),
        (f"{API}/check-report", {"text": long_text}),
    ):
        r = client.post(path, json=body, headers=auth(keys["integration"]))
        assert r.status_code == 413, (path, r.text)
        detail = r.json()["detail"]
        assert str(limit) in detail and "RADCHECK_CHECKS__MAX_REPORT_CHARS" in detail
        assert r.json()["request_id"]
    assert time.monotonic() - started < 10  # refused before parsing: no checker cost
    db = Database(settings.database_url)
    with db.session() as session:
        assert session.scalar(select(func.count(Report.id))) == 0
    # HL7: the same limit answers AR with the reason, nothing stored.
    message = oru_v251(control_id="BIG-1", accession="A16", impression=long_text)
    result = receive_message(
        db, message, config=IntakeConfig(max_report_chars=limit), source="mllp"
    )
    assert result.code.value == "AR" and "RADCHECK_CHECKS__MAX_REPORT_CHARS" in result.text
    db.dispose()
    # At the cap the checker answers (near-linear cost): bounded time on a busy machine.
    at_cap = "FINDINGS: " + SENTENCE * ((limit - 20) // len(SENTENCE))
    started = time.monotonic()
    r = client.post(f"{API}/check-report", json={"text": at_cap}, headers=auth(keys["integration"]))
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 30


def test_a_check_past_its_time_budget_fails_with_its_reason(
    settings: Settings, keys: dict[str, str]
) -> None:
    report = parse_report("FINDINGS: " + SENTENCE * 20)
    with pytest.raises(CheckTimeBudgetError, match=r"time budget .*RADCHECK_CHECKS__TIME_BUDGET_S"):
        Checker().check(report, deadline=time.monotonic() - 1)
    pipeline = CheckPipeline(checker=Checker(), runtime=None, time_budget_s=1e-9)
    with pytest.raises(CheckTimeBudgetError, match="stopped after"):
        pipeline.run(JobInputs(job_id=1, report=report, candidates=()))
    # The synchronous door answers 503 with the reason (the worker fails the job with it).
    tight = settings.model_copy(
        update={"checks": settings.checks.model_copy(update={"time_budget_s": 1e-9})}
    )
    with TestClient(create_app(tight, run_worker=False)) as c:
        r = c.post(
            f"{API}/check-report",
            json={"text": "FINDINGS: " + SENTENCE},
            headers=auth(keys["integration"]),
        )
    assert r.status_code == 503 and "time budget" in r.json()["detail"], r.text


# --- 16.4: lone surrogates, NUL and control characters -> 422 in the one error shape ------------


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        (f"/studies/{UID}/reports", b'{"findings": "Effusion \\ud800 right.", "impression": "x"}'),
        (f"/studies/{UID}/reports", b'{"findings": "ok", "accession_number": "A\\udfff"}'),
        (f"/studies/{UID}/reports", b'{"findings": "NUL \\u0000 here"}'),
        ("/check-report", b'{"findings": "ok", "header": {"modality": "C\\ud83dR"}}'),
        ("/check-report", b'{"findings": "ok", "\\ud800": 1}'),
    ],
)
def test_lone_surrogates_and_nul_are_a_422_with_request_id(
    client: TestClient, keys: dict[str, str], path: str, raw: bytes
) -> None:
    r = client.post(
        f"{API}{path}",
        content=raw,
        headers={**auth(keys["integration"]), "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "invalid_input" and body["request_id"] == r.headers["X-Request-ID"]
    assert "U+" in body["detail"] and body["errors"][0]["loc"][0] == "body"


def test_nul_in_query_string_is_a_422(client: TestClient, keys: dict[str, str]) -> None:
    r = client.get(f"{API}/studies?accession_number=A%00B", headers=auth(keys["radiologist"]))
    assert r.status_code == 422 and "U+0000" in r.json()["detail"], r.text
    assert r.json()["errors"][0]["loc"][0] == "query"


# --- 16.7: header values held to their VR's length --------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "vr"),
    [
        ("PatientName", "A" * 5009, "PN"),
        ("PatientName", "Doe^Jane=" + "B" * 65, "PN"),
        ("PatientID", "7" * 500, "LO"),
        ("AccessionNumber", "Z" * 300, "SH"),
        ("StudyDescription", "D" * 65, "LO"),
    ],
)
def test_overlong_header_values_are_refused_422_and_nothing_is_kept(
    client: TestClient,
    keys: dict[str, str],
    settings: Settings,
    rg1_path: Path,
    keyword: str,
    value: str,
    vr: str,
) -> None:
    r = post_files(client, keys["integration"], dicom_bytes(rg1_path, **{keyword: value}))
    assert r.status_code == 422, r.text  # type: ignore[attr-defined]
    detail = r.json()["detail"]  # type: ignore[attr-defined]
    assert f"'{keyword}'" in detail and f"VR {vr}" in detail and value not in detail
    db = Database(settings.database_url)
    with db.session() as session:
        assert session.scalar(select(func.count(Instance.id))) == 0
        assert session.scalar(select(func.count(Study.id))) == 0
    db.dispose()
    assert stored_files(settings) == []
    # Values at the limit are stored (PostgreSQL's columns hold them).
    ok = {"PN": "A" * 64 + "=" + "B" * 64, "LO": "7" * 64, "SH": "Z" * 16}[vr]
    r = post_files(client, keys["integration"], dicom_bytes(rg1_path, **{keyword: ok}))
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]


# --- 16.8: the SQLite database and its WAL are owner-only ---------------------------------------


def test_sqlite_database_and_wal_are_owner_only(
    tmp_path: Path, keys_free_settings: Settings
) -> None:
    settings = keys_free_settings
    db_file = Path(settings.database_url.removeprefix("sqlite:///"))
    with TestClient(create_app(settings, run_worker=False)) as c:
        c.get(f"{API}/health")
        db = Database(settings.database_url)
        with db.session() as session:
            session.execute(select(func.count(Study.id)))
        modes = {
            p.name: stat.S_IMODE(p.stat().st_mode)
            for p in db_file.parent.iterdir()
            if p.name.startswith(db_file.name)
        }
        db.dispose()
    assert {f"{db_file.name}", f"{db_file.name}-wal", f"{db_file.name}-shm"} <= set(modes), modes
    assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}


@pytest.fixture
def keys_free_settings(tmp_path: Path) -> Settings:
    """A database created by an older version, world-readable (0644), with its WAL."""
    from app.db.migrate import upgrade

    settings = make_settings(tmp_path / "data")
    upgrade(settings.database_url)
    db_file = Path(settings.database_url.removeprefix("sqlite:///"))
    old = os.umask(0o022)
    try:
        db_file.chmod(0o644)
    finally:
        os.umask(old)
    return settings


# --- 16.2: decompression and pixel bombs, refused before inflating or decoding -----------------


def deflate_bomb(src: Path, pixel_mib: int) -> bytes:
    """A deflated chest CR whose data set inflates to ``pixel_mib`` MiB of zeros."""
    ds = pydicom.dcmread(src)
    side = int((pixel_mib * 1024 * 1024 // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = bytes(side * side * 2)
    ds.SOPInstanceUID = f"{UID}.9.{pixel_mib}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_deflate_bomb_is_refused_413_with_bounded_memory(rg1_path: Path) -> None:
    import tracemalloc

    import dicom_io

    bomb = deflate_bomb(rg1_path, 64)
    assert len(bomb) < 200 * 1024  # ~64 MiB of zeros deflates to about 64 KiB
    limits = dicom_io.DecodeLimits(max_inflated_bytes=8 * 1024 * 1024)
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(dicom_io.LimitExceededError, match=r"inflates to more than 8388608"):
            dicom_io.read_instance(bomb, limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1024 * 1024, peak  # about one inflate step, not 64 MiB
    assert time.monotonic() - started < 10


def test_bombs_over_http_are_413_naming_the_setting_and_leave_nothing(
    tmp_path: Path, rg1_path: Path
) -> None:
    from app.db.migrate import upgrade
    from app.services.auth import create_api_key

    settings = Settings.model_validate(
        {
            **make_settings(tmp_path / "data").model_dump(),
            "storage": {"data_dir": tmp_path / "data", "max_inflated_bytes": 8 * 1024 * 1024},
        }
    )
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="t", role="integration")
    # A pixel bomb: a small file whose header announces 60000 x 60000 x 16 bits.
    pixel_bomb = dicom_bytes(rg1_path, index=7, Rows=60000, Columns=60000)
    with TestClient(create_app(settings, run_worker=False)) as c:
        for blob, setting in (
            (deflate_bomb(rg1_path, 64), "RADCHECK_STORAGE__MAX_INFLATED_BYTES"),
            (pixel_bomb, "RADCHECK_STORAGE__MAX_PIXEL_BYTES"),
        ):
            r = post_files(c, key, blob)
            assert r.status_code == 413, r.text  # type: ignore[attr-defined]
            assert setting in r.json()["detail"]  # type: ignore[attr-defined]
        # STOW-RS applies the configured limits too (the 64 MiB bomb is under the default 256)
        boundary = "hostile-boundary"
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + blob + b"\r\n"
                for blob in (deflate_bomb(rg1_path, 64), pixel_bomb)
            )
            + f"--{boundary}--\r\n".encode()
        )
        content_type = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
        r = c.post(
            "/dicomweb/studies", content=body, headers={**auth(key), "Content-Type": content_type}
        )
        assert r.status_code == 409, r.text
        failed = r.json()["00081198"]["Value"]  # FailedSOPSequence
        assert [f["00081197"]["Value"] for f in failed] == [[0xA700], [0xA700]]  # out of resources
    with db.session() as session:
        assert session.scalar(select(func.count(Instance.id))) == 0
    # the C-STORE listener's intake: out of resources, nothing stored
    from app.services.dimse_intake import DimseIntake
    from app.services.ingest import decode_limits
    from app.services.storage import ContentStore
    from dicom_io.net import Status

    intake = DimseIntake(db, ContentStore(settings.files_dir), 0, decode_limits(settings))
    assert intake.store_instance(deflate_bomb(rg1_path, 64), "MODALITY") == Status.OUT_OF_RESOURCES
    with db.session() as session:
        assert session.scalar(select(func.count(Instance.id))) == 0
    db.dispose()
    assert stored_files(settings) == []


# --- 16.5: a truncated image is refused; a broken stored copy is replaced by a complete one -----


def j2k_bytes() -> bytes:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_J2KR.dcm", download=False)
    assert path is not None
    return Path(path).read_bytes()


def test_truncated_jpeg2000_is_refused_and_the_complete_file_is_accepted(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    complete = j2k_bytes()
    cut = complete[:2164]
    r = post_files(client, keys["integration"], cut)
    assert r.status_code == 422 and "truncated" in r.json()["detail"], r.text  # type: ignore[attr-defined]
    assert stored_files(settings) == []
    r = post_files(client, keys["integration"], complete)
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    assert r.json()["accepted"][0]["eligible_for_model"] is True  # type: ignore[attr-defined]


def test_a_complete_resend_replaces_a_stored_copy_found_broken(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    from app.db.models import AuditEvent

    complete = j2k_bytes()
    ds = pydicom.dcmread(io.BytesIO(complete))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    # Cut inside the codestream and re-wrapped with consistent lengths and an end marker: it
    # looks complete, so it is stored; it does not decode (found broken when checked).
    ds.PixelData = encapsulate([frame[: len(frame) // 3] + b"\xff\xd9"])
    buf = io.BytesIO()
    ds.save_as(buf)
    broken = buf.getvalue()
    assert post_files(client, keys["integration"], broken).status_code == 201  # type: ignore[attr-defined]
    r = post_files(client, keys["integration"], complete)
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]  # not 409 for ever
    import hashlib

    db = Database(settings.database_url)
    with db.session() as session:
        rows = session.scalars(select(Instance)).all()
        assert len(rows) == 1 and rows[0].sha256 == hashlib.sha256(complete).hexdigest()
        actions = session.scalars(select(AuditEvent.action)).all()
        assert "instance.replaced" in actions
    db.dispose()
    assert [p.name for p in stored_files(settings)] == [hashlib.sha256(complete).hexdigest()]
    # A different but intact copy is still a conflict (409), and the stored one is kept.
    other = dicom_bytes_of(complete, InstanceNumber=99)
    assert post_files(client, keys["integration"], other).status_code == 409  # type: ignore[attr-defined]
    assert len(stored_files(settings)) == 1


def dicom_bytes_of(data: bytes, **values: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


# --- 16.6: parallel conflicting uploads leave no orphan files ----------------------------------


def test_parallel_conflicting_uploads_leave_one_file_and_one_row(
    settings: Settings, rg1_path: Path
) -> None:
    from app.services.ingest import ingest_instance
    from app.services.storage import ContentStore
    from tests.app.conftest import parallel

    db = Database(settings.database_url)
    store = ContentStore(settings.files_dir)
    blobs = [dicom_bytes(rg1_path, 1, InstanceNumber=i + 1) for i in range(10)]
    assert len(set(blobs)) == 10
    results = parallel(
        10,
        lambda i: db.run(
            lambda s: ingest_instance(s, store, blobs[i], actor="t", limits=limits_of(settings))
        ),
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(1 for r in results if r.conflict) == 9
    with db.session() as session:
        rows = session.scalars(select(Instance)).all()
    db.dispose()
    assert len(rows) == 1
    files = stored_files(settings)
    assert [p.name for p in files] == [rows[0].sha256], files  # no orphans, no .incoming- temps


# --- 13.8: a full disk during ingest is a 507, with no partial file and no row -----------------


def test_full_disk_during_ingest_is_507_and_leaves_nothing(
    client: TestClient,
    keys: dict[str, str],
    settings: Settings,
    rg1_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from app.services import storage

    real = storage._write_all

    def disk_fills_halfway(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])  # a real partial file on disk ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(storage, "_write_all", disk_fills_halfway)
    r = post_files(client, keys["integration"], dicom_bytes(rg1_path))
    assert r.status_code == 507, r.text  # type: ignore[attr-defined]
    assert "No space left" in r.json()["detail"] and r.json()["request_id"]  # type: ignore[attr-defined]
    assert stored_files(settings) == []  # the partial temporary file was removed
    db = Database(settings.database_url)
    with db.session() as session:
        assert session.scalar(select(func.count(Instance.id))) == 0
        assert session.scalar(select(func.count(Study.id))) == 0
    db.dispose()
    monkeypatch.setattr(storage, "_write_all", real)
    assert post_files(client, keys["integration"], dicom_bytes(rg1_path)).status_code == 201  # type: ignore[attr-defined]


# --- 16.3 / 16.10: authentication before the body, streamed limits, headers, failed-auth audit --


def test_unauthenticated_upload_is_401_before_the_body_is_read(
    client: TestClient, settings: Settings
) -> None:
    """The 401 comes from the headers alone: the gate never asks the body's stream."""
    from starlette.types import Message

    app = client.app
    pulled: list[int] = []

    async def receive() -> Message:
        pulled.append(1)
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/instances",
        "raw_path": f"{API}/instances".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"host", b"t")],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
        "app": app,
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 401
    assert pulled == []  # not one byte of the (endless) body was read
    assert stored_files(settings) == []


def test_malformed_json_without_a_key_is_401_not_422(client: TestClient) -> None:
    r = client.post(
        f"{API}/check-report", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401, r.text


def test_chunked_body_over_the_limit_is_413_counted_as_it_streams(
    tmp_path: Path, rg1_path: Path
) -> None:
    from app.db.migrate import upgrade
    from app.services.auth import create_api_key

    settings = Settings.model_validate(
        {
            **make_settings(tmp_path / "data").model_dump(),
            "storage": {"data_dir": tmp_path / "data", "max_upload_bytes": 64 * 1024},
        }
    )
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="t", role="integration")
    db.dispose()

    def chunks() -> object:
        for _ in range(64):  # 4 MiB in 64 KiB chunks, no Content-Length
            yield b"--x\r\n" + b"y" * 65536

    with TestClient(create_app(settings, run_worker=False)) as c:
        r = c.post(
            f"{API}/instances",
            content=chunks(),  # type: ignore[arg-type]
            headers={**auth(key), "Content-Type": "multipart/form-data; boundary=x"},
        )
    assert r.status_code == 413, r.text
    assert "RADCHECK_STORAGE__MAX_UPLOAD_BYTES" in r.json()["detail"]
    assert stored_files(settings) == []


def test_security_headers_on_every_response_and_docs_switchable(
    client: TestClient, keys: dict[str, str], settings: Settings
) -> None:
    for path, headers in (
        (f"{API}/health", {}),
        (f"{API}/studies", auth(keys["radiologist"])),
        (f"{API}/studies", {}),  # a 401 too
        ("/nowhere", {}),
    ):
        r = client.get(path, headers=headers)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert r.headers["X-Frame-Options"] == "DENY", path
        assert r.headers["Referrer-Policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"], path
        assert r.headers["Cache-Control"] == "no-store", path
    page = client.get(f"{API}/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    # offline: the page names no other host, and its assets come from this server
    assert "://" not in page.text and "//cdn" not in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "http" not in csp and "script-src 'self'" in csp
    assets = sorted(re.findall(r'(?:src|href)="([^"]+)"', page.text))
    assert assets == [f"{API}/docs/swagger-ui-bundle.js", f"{API}/docs/swagger-ui.css", "data:,"]
    js, css = (client.get(url) for url in assets[:2])
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in js.text and len(js.content) > 500_000
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get(f"{API}/docs/redoc.standalone.js").status_code in (401, 404)
    off = settings.model_copy(update={"api": settings.api.model_copy(update={"docs": False})})
    with TestClient(create_app(off, run_worker=False)) as c:
        off_page = c.get(f"{API}/docs")
        assert off_page.status_code in (401, 404) and "swagger" not in off_page.text
        assert c.get(f"{API}/docs/swagger-ui-bundle.js").status_code in (401, 404)
        assert c.get(f"{API}/health").status_code == 200


def test_failed_authentications_are_audited_and_rate_limited_in_the_log(
    client: TestClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from app.db.models import AuditEvent

    caplog.set_level("WARNING", logger="app.api.gate")
    for i in range(200):
        key = "rck_" + "x" * 40 if i % 2 else ""
        r = client.get(f"{API}/studies", headers={"X-API-Key": key} if key else {})
        assert r.status_code == 401
    lines = [rec for rec in caplog.records if "authentication failed" in rec.getMessage()]
    assert len(lines) == 1, [rec.getMessage() for rec in lines]  # one line per peer per minute
    assert "rck_" not in caplog.text  # no credential in the log
    db = Database(settings.database_url)
    with db.session() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.failed")).all()
    db.dispose()
    assert len(rows) == 1 and rows[0].object_id == "testclient"
