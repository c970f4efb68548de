"""Helpers for the check-job tests: a study with a report, a queued check, a worker, and the
worklist's rows compared with the flags and reviews they summarise."""

from __future__ import annotations

import time
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import pydicom
from sqlalchemy import select

from app.db.models import Flag, Study
from app.db.session import Database
from app.services import jobs
from app.services.factory import build_pipeline
from app.services.ingest import ingest_instance
from app.services.reports import ReportSubmission, submit_report
from app.services.storage import ContentStore
from app.services.worklist import SEVERITY_RANK, WorklistFilter, next_unreviewed, worklist
from app.settings import Settings
from app.worker.runner import Worker
from tests.app.conftest import limits_of

REPORT = ReportSubmission(
    findings="There is a small right pleural effusion. No pneumothorax.",
    impression="Small left pleural effusion.",
)
LEASE = timedelta(seconds=30)
NO_QUIET = timedelta(0)


def add_study(
    db: Database, settings: Settings, src: Path, index: int, report: ReportSubmission = REPORT
) -> str:
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.544.{index}"
    ds.SeriesInstanceUID = f"{ds.StudyInstanceUID}.1"
    ds.SOPInstanceUID = f"{ds.StudyInstanceUID}.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = BytesIO()
    ds.save_as(buf)
    with db.session() as session:
        ingest_instance(
            session,
            ContentStore(settings.files_dir),
            buf.getvalue(),
            actor="t",
            limits=limits_of(settings),
        )
        submit_report(session, study_uid=ds.StudyInstanceUID, submission=report, actor="t")
    return str(ds.StudyInstanceUID)


def queue(db: Database, uid: str, max_attempts: int = 3) -> int:
    with db.session() as session:
        job, created = jobs.request_check(
            session, study_uid=uid, actor="t", max_attempts=max_attempts, report_version=None
        )
        assert created
        return job.id


def run_one(worker: Worker, timeout: float = 10) -> bool:
    """Process one job once the study's (short) quiet period has passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.run_once():
            return True
        time.sleep(0.02)
    return False


FLAGGED = ReportSubmission(
    findings="There is a small right pleural effusion. No pneumothorax.",
    impression="Small left pleural effusion.",
)


def expected(db: Database) -> dict[str, tuple[int, int, dict[str, int]]]:
    """Per study UID: (flags, open flags, open flags by severity) counted from the source rows."""
    out: dict[str, tuple[int, int, dict[str, int]]] = {}
    with db.session() as session:
        for study in session.scalars(select(Study)):
            latest = max((j.id for j in study.jobs), default=None)
            flags = (
                session.scalars(select(Flag).where(Flag.check_job_id == latest)).all()
                if latest is not None
                else []
            )
            open_ = [f for f in flags if not f.reviews]
            by_sev = {k: sum(f.severity == k for f in open_) for k in SEVERITY_RANK}
            out[study.study_instance_uid] = (len(flags), len(open_), by_sev)
    return out


def assert_worklist_agrees(db: Database) -> None:
    want = expected(db)
    with db.session() as session:
        items, counts = worklist(session, WorklistFilter(limit=500))
        nxt = next_unreviewed(session, WorklistFilter(), after=None)
    got = {i["study_instance_uid"]: (i["flags"], i["open_flags"]) for i in items}
    assert got == {uid: (n, o) for uid, (n, o, _) in want.items()}
    assert counts["studies"] == len(want)
    assert counts["with_open_flags"] == sum(o > 0 for _, o, _ in want.values())
    assert counts["open_flags"] == sum(o for _, o, _ in want.values())
    assert counts["by_severity"] == {
        k: sum(s[k] for _, _, s in want.values()) for k in SEVERITY_RANK
    }
    # Open flags first, by the most severe open flag.
    ranks = [
        max((SEVERITY_RANK[k] for k, n in want[i["study_instance_uid"]][2].items() if n), default=0)
        for i in items
    ]
    assert ranks == sorted(ranks, reverse=True)
    assert (nxt is None) == (counts["with_open_flags"] == 0)
    if nxt is not None:
        assert want[nxt][1] > 0


def make_worker(db: Database, settings: Settings) -> Worker:
    return Worker(
        db,
        lambda: build_pipeline(settings),
        files_dir=settings.files_dir,
        lease_s=30,
        poll_interval_s=0.05,
        quiet_period_s=0,
    )
