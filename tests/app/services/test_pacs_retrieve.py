"""Pulling a study from a real throw-away Orthanc by accession number (API job and CLI)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pydicom
from sqlalchemy import select, update

from app.db.models import Instance, PacsRetrieval
from app.db.session import Database
from app.services.pacs_retrieve import RetrievalView
from app.settings import PacsNode, Settings
from tests.app.conftest import limits_of
from tests.app.dicomweb_support import copy_with_new_uids, read, serve
from tests.orthanc import OrthancServer

REPO = Path(__file__).resolve().parents[3]


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
    with serve(settings, run_worker=True) as url:  # the in-process worker runs the pull
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


def dimse_node(settings: Settings, orthanc: OrthancServer, method: str) -> Settings:
    pacs = settings.pacs.model_validate(
        {
            "nodes": [
                {
                    "name": "orthanc",
                    "ae_title": orthanc.aet,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "retrieve": method,
                    "timeout_s": 30,
                }
            ]
        }
    )
    return settings.model_copy(update={"pacs": pacs})


def claim_and_run(
    db: Database,
    settings: Settings,
    node: PacsNode,
    retrieval_id: int,
    calling_ae: str = "RADCHECK",
) -> RetrievalView:
    from app.services.pacs_retrieve import claim_retrieval, run_retrieval
    from app.services.storage import ContentStore

    lease = timedelta(seconds=60)
    with db.session() as session:
        claimed = claim_retrieval(session, worker_id="test", lease=lease, retrieval_id=retrieval_id)
    assert claimed == retrieval_id
    return run_retrieval(
        db,
        ContentStore(settings.files_dir),
        node,
        retrieval_id,
        calling_ae_title=calling_ae,
        worker_id="test",
        lease=lease,
        limits=limits_of(settings),
    )


def test_pull_by_c_get_by_accession_number_keeps_compressed_files(
    sqlite_settings: Settings, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    from app.services.pacs_retrieve import create_retrieval, resolve_node

    orthanc = orthanc_factory()
    study = load_orthanc(orthanc, "ACC-CGET")
    j2k = copy_with_new_uids(read("RG1_J2KR.dcm"), study_uid=study[0].StudyInstanceUID)
    buffer = io.BytesIO()
    j2k.save_as(buffer, enforce_file_format=True)
    orthanc.upload(buffer.getvalue())
    settings = dimse_node(sqlite_settings, orthanc, "c-get")
    node = resolve_node(settings.pacs, None)
    db = Database(settings.database_url)
    try:
        view = db.run(
            lambda s: create_retrieval(
                s, node, study_instance_uid=None, accession_number="ACC-CGET", actor="test"
            )
        )
        assert view.method == "c-get"
        done = claim_and_run(db, settings, node, view.id)
        assert done.status == "succeeded", done
        assert (done.total, done.stored, done.failed) == (3, 3, 0)
        assert done.studies == [study[0].StudyInstanceUID]
        with db.session() as session:
            rows = {r.sop_instance_uid: r for r in session.scalars(select(Instance)).all()}
            assert set(rows) == {ds.SOPInstanceUID for ds in [*study, j2k]}
            assert {r.source for r in rows.values()} == {"pacs"}
            stored = rows[j2k.SOPInstanceUID]
            assert stored.transfer_syntax_uid == j2k.file_meta.TransferSyntaxUID  # not transcoded
            on_disk = pydicom.dcmread(settings.files_dir / stored.storage_path)
            assert on_disk.PixelData == j2k.PixelData

        missing = db.run(
            lambda s: create_retrieval(
                s, node, study_instance_uid=None, accession_number="NOPE", actor="test"
            )
        )
        failed = claim_and_run(db, settings, node, missing.id)
        assert failed.status == "failed" and "no study accession number NOPE" in (
            failed.error or ""
        )
    finally:
        db.dispose()
    orthanc.stop()
    gone = dimse_node(sqlite_settings, orthanc, "c-get")
    db = Database(gone.database_url)
    try:
        node = resolve_node(gone.pacs, None)
        view = db.run(
            lambda s: create_retrieval(
                s, node, study_instance_uid=None, accession_number="ACC-CGET", actor="test"
            )
        )
        down = claim_and_run(db, gone, node, view.id)
        assert down.status == "failed" and "No association with the PACS ORTHANC" in (
            down.error or ""
        )
    finally:
        db.dispose()


def test_pull_by_c_move_to_the_listener(
    sqlite_settings: Settings, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    from app.services.pacs_retrieve import create_retrieval, resolve_node
    from tests.app.dicomweb_support import Listener

    listener = Listener(sqlite_settings, allowed=("STORESCU", "ORTHANC"))
    try:
        orthanc = orthanc_factory(modalities={"radcheck": ("RADCHECK", "127.0.0.1", listener.port)})
        study = load_orthanc(orthanc, "ACC-MOVE")
        settings = dimse_node(sqlite_settings, orthanc, "c-move")
        node = resolve_node(settings.pacs, None)
        db = Database(settings.database_url)
        try:
            view = db.run(
                lambda s: create_retrieval(
                    s, node, study_instance_uid=None, accession_number="ACC-MOVE", actor="test"
                )
            )
            done = claim_and_run(db, settings, node, view.id)
            assert done.status == "succeeded", done
            assert (done.total, done.stored, done.failed) == (2, 2, 0)
            with db.session() as session:
                rows = session.scalars(select(Instance)).all()
                assert {r.sop_instance_uid for r in rows} == {ds.SOPInstanceUID for ds in study}
                assert {r.source for r in rows} == {"dimse"}  # arrived through the listener
            unknown = db.run(
                lambda s: create_retrieval(
                    s,
                    node,
                    study_instance_uid=study[0].StudyInstanceUID,
                    accession_number=None,
                    actor="test",
                )
            )
            wrong = claim_and_run(db, settings, node, unknown.id, calling_ae="NOBODY")
            assert wrong.status == "failed" and "knows the move destination NOBODY" in (
                wrong.error or ""
            ), wrong
        finally:
            db.dispose()
    finally:
        listener.stop()


def test_a_killed_pull_is_taken_over_and_finished_by_a_worker(
    sqlite_settings: Settings, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    """The CLI pulling a 20-instance study is SIGKILLed mid-pull; once its lease has expired, a
    worker claims the row, runs it from the start, and finishes it (nothing left ``running``)."""
    from app.worker.retrievals import RetrievalRunner

    orthanc = orthanc_factory()
    rg1 = read("RG1_UNCR.dcm")
    study = [copy_with_new_uids(rg1, accession="ACC-KILL")]
    study += [copy_with_new_uids(rg1, study_uid=study[0].StudyInstanceUID) for _ in range(19)]
    for ds in study:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        orthanc.upload(buffer.getvalue())
    settings = with_node(sqlite_settings, orthanc)
    nodes = [{"name": "orthanc", "dicomweb_url": orthanc.dicomweb_url}]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RADCHECK_STORAGE__DATA_DIR": str(settings.storage.data_dir),
        "RADCHECK_DATABASE__URL": settings.database_url,
        "RADCHECK_WORKER__LEASE_S": "2",
        "RADCHECK_PACS__NODES": json.dumps(nodes),
    }
    cli = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "pacs", "retrieve", "--accession", "ACC-KILL"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = Database(settings.database_url)
    try:

        def row() -> PacsRetrieval | None:
            with db.session() as session:
                found = session.scalar(select(PacsRetrieval))
                if found is not None:
                    session.expunge(found)
                return found

        deadline = time.monotonic() + 120
        while (r := row()) is None or r.stored < 1:
            assert cli.poll() is None, "the CLI ended before it could be killed"
            assert time.monotonic() < deadline, "the CLI never started storing"
            time.sleep(0.02)
        cli.kill()
        cli.wait(timeout=30)
        dead = row()
        assert dead is not None and dead.status == "running" and dead.stored < 20
        assert (dead.lease_owner or "").startswith("cli:")

        runner = RetrievalRunner(
            db,
            files_dir=settings.files_dir,
            pacs=settings.pacs,
            worker_id="w1",
            lease_s=60,
            limits=limits_of(settings),
        )
        deadline = time.monotonic() + 60
        while not runner.run_once():  # nothing to claim until the dead CLI's 2 s lease expires
            assert time.monotonic() < deadline, "the abandoned pull was never claimed"
            time.sleep(0.1)
        done = row()
        assert done is not None
        assert done.status == "succeeded", done.error
        assert (done.total, done.stored, done.failed, done.attempts) == (20, 20, 0, 2)
        assert done.lease_owner is None and done.finished_at is not None
        assert not runner.run_once()  # nothing left to do
    finally:
        db.dispose()
        if cli.poll() is None:
            cli.kill()
    assert sop_uids(settings) == {ds.SOPInstanceUID for ds in study}


def test_a_pull_abandoned_too_often_is_failed_not_run_again(
    sqlite_settings: Settings, orthanc: OrthancServer
) -> None:
    from app.services.pacs_retrieve import MAX_ATTEMPTS, create_retrieval, resolve_node
    from app.worker.retrievals import RetrievalRunner

    settings = with_node(sqlite_settings, orthanc)
    db = Database(settings.database_url)
    try:
        node = resolve_node(settings.pacs, None)
        view = db.run(
            lambda s: create_retrieval(
                s, node, study_instance_uid=None, accession_number="ACC-X", actor="test"
            )
        )
        with db.session() as session:  # what MAX_ATTEMPTS runners that all died leave behind
            session.execute(
                update(PacsRetrieval)
                .where(PacsRetrieval.id == view.id)
                .values(
                    status="running",
                    attempts=MAX_ATTEMPTS,
                    lease_owner="dead",
                    lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC),
                    started_at=datetime(2000, 1, 1, tzinfo=UTC),
                )
            )
        runner = RetrievalRunner(
            db,
            files_dir=settings.files_dir,
            pacs=settings.pacs,
            worker_id="w1",
            lease_s=60,
            limits=limits_of(settings),
        )
        assert not runner.run_once()
        with db.session() as session:
            failed = session.get(PacsRetrieval, view.id)
            assert failed is not None and failed.status == "failed"
            assert failed.error is not None and f"stopped {MAX_ATTEMPTS} times" in failed.error
    finally:
        db.dispose()


def test_a_pull_applies_the_configured_decode_limits(
    sqlite_settings: Settings, orthanc_factory: Callable[..., OrthancServer]
) -> None:
    """RADCHECK_STORAGE__MAX_PIXEL_BYTES below the radiographs' decoded size: both ways of pulling
    (WADO-RS and C-GET) refuse every instance with the configured limit, nothing is stored."""
    from app.services.pacs_retrieve import create_retrieval, resolve_node

    orthanc = orthanc_factory()
    load_orthanc(orthanc, "ACC-LIMIT")  # RG1_UNCR: about 7 MiB of pixels each
    storage = sqlite_settings.storage.model_copy(update={"max_pixel_bytes": 1024 * 1024})
    tight = sqlite_settings.model_copy(update={"storage": storage})
    assert limits_of(tight).max_pixel_bytes == 1024 * 1024
    for settings in (with_node(tight, orthanc), dimse_node(tight, orthanc, "c-get")):
        node = resolve_node(settings.pacs, None)
        db = Database(settings.database_url)
        try:
            view = db.run(
                lambda s, node=node: create_retrieval(
                    s, node, study_instance_uid=None, accession_number="ACC-LIMIT", actor="test"
                )
            )
            done = claim_and_run(db, settings, node, view.id)
        finally:
            db.dispose()
        assert done.status == "failed", (view.method, done)
        assert (done.total, done.stored, done.failed) == (2, 0, 2), (view.method, done)
    assert sop_uids(tight) == set()
    assert not [p for p in tight.files_dir.rglob("*") if p.is_file()]
