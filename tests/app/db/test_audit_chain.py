"""The audit trail is tamper-evident (hash chain, serialised under concurrency) and exportable."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from app.cli.main import cli
from app.db.migrate import upgrade
from app.db.models import AuditEvent, Study
from app.db.session import Database
from app.services import audit
from app.services.audit import ReadAuditBuffer
from app.services.audit_trail import export_events, verify_chain
from app.settings import Settings

GUARDS_OFF = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_events_no_update",
        "DROP TRIGGER IF EXISTS audit_events_no_delete",
    ],
    "postgresql": ["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change"],
}


def tamper(db: Database, *statements: str) -> None:
    """What a database superuser could do: switch off the append-only guard, then edit."""
    with db.engine.begin() as conn:
        for statement in (*GUARDS_OFF[db.dialect], *statements):
            conn.execute(sa.text(statement))


def run_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("RADCHECK_DATABASE__URL", settings.database_url)
    monkeypatch.setenv("RADCHECK_STORAGE__DATA_DIR", str(settings.storage.data_dir))
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_concurrent_writers_make_one_linear_chain(settings: Settings) -> None:
    db = Database(settings.database_url)
    buffer = ReadAuditBuffer(db, interval_s=0.01)
    buffer.start()
    threads, per_thread = 6, 15

    def write(n: int) -> None:
        for i in range(per_thread):
            with db.session() as session:
                audit.record(session, actor=f"t{n}", action="report.submitted", object_id=i)
            buffer.add(actor=f"t{n}", action="study.read")

    workers = [threading.Thread(target=write, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    buffer.stop()
    with db.session() as session:
        report = verify_chain(session)
        seqs = session.scalars(sa.select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert report.problems == []
    assert report.rows == 2 * threads * per_thread
    assert seqs == list(range(1, report.rows + 1))
    db.dispose()


def test_verify_detects_an_edited_a_deleted_and_a_truncated_row(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(settings.database_url)
    for i in range(6):
        with db.session() as session:
            audit.record(session, actor="apikey:ris", action="report.submitted", details={"n": i})
    code, out = run_cli(settings, monkeypatch, "audit", "verify")
    assert code == 0, out
    assert "intact: 6 rows" in out

    tamper(db, "UPDATE audit_events SET actor = 'apikey:someone-else' WHERE seq = 2")
    code, out = run_cli(settings, monkeypatch, "audit", "verify")
    assert code == 1
    assert "position 2) was edited" in out

    tamper(db, "DELETE FROM audit_events WHERE seq = 4")
    with db.session() as session:
        problems = verify_chain(session).problems
    assert any("position 4 is missing" in p for p in problems)
    assert any("position 5) does not link" in p for p in problems)

    tamper(db, "DELETE FROM audit_events WHERE seq = 6")
    with db.session() as session:
        problems = verify_chain(session).problems
    assert any("rows were deleted from the end" in p for p in problems)
    db.dispose()


def test_export_filters_and_names_atna_events(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    db = Database(settings.database_url)
    with db.session() as session:
        study = Study(study_instance_uid="1.2.826.0.1.77")
        session.add(study)
        session.flush()
        audit.record(session, actor="apikey:pacs", action="instance.stored", study_id=study.id)
        audit.record(session, actor="apikey:reader", action="study.read", study_id=study.id)
        audit.record(session, actor="apikey:reader", action="studies.list")
        audit.record(session, actor="cli", action="apikey.created", object_type="api_key")
    out = tmp_path / "study.jsonl"
    code, text = run_cli(
        settings, monkeypatch, "audit", "export", "--study", "1.2.826.0.1.77", "--out", str(out)
    )
    assert code == 0, text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["action"], r["atna_event"], r["atna_event_id"]) for r in rows] == [
        ("instance.stored", "DICOM Instances Transferred", "110104"),
        ("study.read", "DICOM Instances Accessed", "110103"),
    ]
    assert all(r["study_instance_uid"] == "1.2.826.0.1.77" for r in rows)

    out = tmp_path / "reader.csv"
    code, text = run_cli(
        settings, monkeypatch, "audit", "export", "--user", "apikey:reader", "--format", "csv",
        "--from", "2000-01-01", "--to", "2999-01-01", "--out", str(out),
    )  # fmt: skip
    assert code == 0, text
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["action"] for r in table] == ["study.read", "studies.list"]

    code, text = run_cli(settings, monkeypatch, "audit", "export", "--to", "1999-01-01")
    assert code == 0 and "exported 0 audit events" in text
    code, text = run_cli(settings, monkeypatch, "audit", "export", "--from", "yesterday")
    assert code == 2 and "is not a date" in text

    with db.session() as session:
        exports = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "audit.exported")
        ).all()
        buffer = io.StringIO()
        export_events(session, buffer)
        assert verify_chain(session).intact
    assert len(exports) == 3  # every export is itself audited (ATNA "Export")
    assert '"atna_event": "Export"' in buffer.getvalue()
    db.dispose()


def test_migration_chains_existing_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0002")
    db = Database(url)
    with db.engine.begin() as conn:
        for i in range(3):
            conn.execute(
                sa.text(
                    "INSERT INTO audit_events (at, actor, action, details) "
                    "VALUES (:at, 'cli', 'apikey.created', :d)"
                ),
                {"at": f"2026-01-0{i + 1} 10:00:00.000000", "d": json.dumps({"i": i})},
            )
    upgrade(url)
    with db.session() as session:
        audit.record(session, actor="cli", action="apikey.revoked")
    with db.session() as session:
        report = verify_chain(session)
    assert report.problems == [] and report.rows == 4
    db.dispose()
