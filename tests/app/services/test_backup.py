"""``radcheck backup`` / ``radcheck restore``: a fresh data directory gets back every study, report
version, flag, review and file, byte for byte; a damaged backup is refused before anything is written."""

from __future__ import annotations

import hashlib
import stat
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli.main import cli
from app.db.models import AuditEvent, Flag, Instance, Report, Review, Study
from app.db.session import Database
from app.services.audit_trail import verify_chain
from app.settings import Settings
from tests.app.api_support import API, REPORT, synthetic_study, upload, wait_for_check
from tests.app.conftest import auth, make_settings
from tests.conftest import PG_ADMIN_URL


@contextmanager
def empty_pg_database() -> Iterator[str]:
    name = f"radcheck_restore_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(PG_ADMIN_URL)
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("RADCHECK_DATABASE__URL", settings.database_url)
    monkeypatch.setenv("RADCHECK_STORAGE__DATA_DIR", str(settings.storage.data_dir))
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def snapshot(settings: Settings) -> dict[str, Any]:
    """Everything a restore must bring back, keyed by natural ids (not surrogate ones)."""
    db = Database(settings.database_url)
    with db.session() as session:
        studies = sorted(
            (s.study_instance_uid, s.accession_number, s.patient_id, s.patient_name, s.status,
             s.study_date, s.created_at)
            for s in session.scalars(sa.select(Study))
        )  # fmt: skip
        reports = sorted(
            (r.study.study_instance_uid, r.version, r.findings, r.impression, r.indication,
             r.submitted_by, r.created_at)
            for r in session.scalars(sa.select(Report))
        )  # fmt: skip
        flags = sorted(
            (f.job.report.version, f.key, f.subtype, f.severity, f.message, f.span_start,
             f.span_end, f.confidence)
            for f in session.scalars(sa.select(Flag))
        )  # fmt: skip
        reviews = sorted(
            (r.flag.key, r.decision, r.comment, r.reviewer, r.created_at)
            for r in session.scalars(sa.select(Review))
        )
        instances = sorted(
            (i.sop_instance_uid, i.sha256, i.size_bytes, i.storage_path)
            for i in session.scalars(sa.select(Instance))
        )
        chain = verify_chain(session)
        audit_rows = session.execute(
            sa.select(AuditEvent.seq, AuditEvent.action, AuditEvent.row_hash).order_by(
                AuditEvent.seq
            )
        ).all()
    db.dispose()
    files = {
        row[3]: hashlib.sha256((settings.files_dir / row[3]).read_bytes()).hexdigest()
        for row in instances
    }
    assert all(files[row[3]] == row[1] for row in instances)
    return {
        "studies": studies,
        "reports": reports,
        "flags": flags,
        "reviews": reviews,
        "instances": instances,
        "files": files,
        "audit_intact": chain.intact,
        "audit_rows": [tuple(r) for r in audit_rows],
    }


def test_backup_then_restore_into_a_fresh_data_dir_is_identical(
    settings: Settings,
    client: TestClient,
    keys: dict[str, str],
    rg1_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    integ, rad = keys["integration"], keys["radiologist"]
    assert (
        upload(client, integ, rg1_path, *synthetic_study(tmp_path, rg1_path, 2)).status_code == 201
    )
    uid = client.get(f"{API}/studies", headers=auth(integ)).json()["items"][0]["study_instance_uid"]
    for impression in ("Small right pleural effusion.", "Small left pleural effusion."):
        body = {**REPORT, "impression": impression}
        assert (
            client.post(f"{API}/studies/{uid}/reports", json=body, headers=auth(integ)).status_code
            == 201
        )
    job = client.post(f"{API}/studies/{uid}/checks", headers=auth(integ)).json()
    job = wait_for_check(client, integ, job["id"])
    assert job["status"] == "succeeded" and job["flags"]
    review = {"decision": "accepted", "comment": "agreed"}
    flag = job["flags"][0]["id"]
    assert (
        client.post(f"{API}/flags/{flag}/reviews", json=review, headers=auth(rad)).status_code
        == 201
    )
    before = snapshot(settings)
    assert before["reviews"] and before["flags"] and len(before["reports"]) == 2

    folder = tmp_path / "backup"
    code, out = run_cli(settings, monkeypatch, "backup", str(folder))
    assert code == 0, out
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    code, out = run_cli(settings, monkeypatch, "backup", str(folder))
    assert code == 2 and "not empty" in out

    target: AbstractContextManager[str | None] = (
        nullcontext() if settings.database.url is None else empty_pg_database()
    )
    with target as pg:
        fresh = make_settings(tmp_path / "fresh", pg)
        code, out = run_cli(fresh, monkeypatch, "restore", str(folder))
        assert code == 0, out
        after = snapshot(fresh)
        # The restored chain is intact: the source's chain as of the backup (reads are audited in
        # the background, so it may hold a few more rows than `before`), then backup.restored.
        restored, source = after.pop("audit_rows"), snapshot(settings)["audit_rows"]
        assert len(restored) - 1 >= len(before.pop("audit_rows"))
        assert restored[:-1] == source[: len(restored) - 1]
        assert restored[-1][1] == "backup.restored"
        assert after == before
        if fresh.database.url is None:
            db_file = fresh.storage.data_dir / "radcheck.db"
            assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
        code, out = run_cli(fresh, monkeypatch, "restore", str(folder))
        assert code == 2 and ("not empty" in out or "already has RadCheck tables" in out)


def test_damaged_backup_is_refused_before_anything_is_written(
    sqlite_settings: Settings, rg1_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "backup"
    store = sqlite_settings.files_dir / "ab" / "cd"
    store.mkdir(parents=True)
    (store / ("abcd" + "0" * 60)).write_bytes(rg1_path.read_bytes())
    code, out = run_cli(sqlite_settings, monkeypatch, "backup", str(folder))
    assert code == 0, out
    damaged = next((folder / "files").rglob("abcd*"))
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    fresh = make_settings(tmp_path / "fresh")
    code, out = run_cli(fresh, monkeypatch, "restore", str(folder))
    assert code == 2
    assert "SHA-256 differs from the manifest" in out and "nothing was restored" in out
    assert not (fresh.storage.data_dir / "files").exists()
