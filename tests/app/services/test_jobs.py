"""Durable check jobs: claiming, leases, re-claiming after a dead worker, idempotent results."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db.models import (
    AuditEvent,
    CheckJob,
    Flag,
    JobStatus,
    Study,
    StudyStatus,
)
from app.db.session import Database
from app.services import jobs
from app.services.errors import ConflictError
from app.services.factory import build_pipeline
from app.settings import ModelBackend, Settings
from app.worker.runner import Worker
from tests.app.jobs_support import LEASE, NO_QUIET, add_study, queue, run_one


@pytest.fixture
def db(settings: Settings) -> Database:
    return Database(settings.database_url)


def test_concurrent_workers_claim_each_job_once(
    db: Database, settings: Settings, rg1_path: Path
) -> None:
    job_ids = {queue(db, add_study(db, settings, rg1_path, i)) for i in range(6)}
    claimed: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claim_all(name: str) -> None:
        barrier.wait()
        while True:
            with db.session() as session:
                got = jobs.claim_next(session, worker_id=name, lease=LEASE, quiet_period=NO_QUIET)
            if got is None:
                return
            claimed[name].append(got)

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    together = claimed["a"] + claimed["b"]
    assert sorted(together) == sorted(job_ids)  # every job claimed, none twice
    with db.session() as session:
        rows = session.scalars(select(CheckJob)).all()
        assert all(r.status == JobStatus.RUNNING and r.attempts == 1 for r in rows)


def test_dead_worker_job_is_reclaimed_and_finished_once(
    db: Database, settings: Settings, rg1_path: Path
) -> None:
    job_id = queue(db, add_study(db, settings, rg1_path, 1))
    pipeline = build_pipeline(settings)
    short = timedelta(milliseconds=200)
    with db.session() as session:
        assert (
            jobs.claim_next(session, worker_id="dead", lease=short, quiet_period=NO_QUIET) == job_id
        )
    with db.session() as session:  # lease still valid: nobody else may take it
        assert jobs.claim_next(session, worker_id="b", lease=LEASE, quiet_period=NO_QUIET) is None
    time.sleep(0.3)
    with db.session() as session:
        assert jobs.claim_next(session, worker_id="b", lease=LEASE, quiet_period=NO_QUIET) == job_id
    with db.session() as session:
        inputs = jobs.load_inputs(session, job_id=job_id, files_dir=settings.files_dir)
    result = pipeline.run(inputs)
    assert result.flags, "the report has a laterality slip"
    with db.session() as session:  # the dead worker comes back: its result is refused
        assert not jobs.complete_job(session, job_id=job_id, worker_id="dead", result=result)
    with db.session() as session:
        assert jobs.complete_job(session, job_id=job_id, worker_id="b", result=result)
    with db.session() as session:
        job = session.get(CheckJob, job_id)
        assert job is not None
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
        n_flags = session.scalar(select(func.count(Flag.id)).where(Flag.check_job_id == job_id))
        assert n_flags == len({f.key for f in result.flags})
        completions = session.scalar(
            select(func.count(AuditEvent.id)).where(AuditEvent.action == "check.completed")
        )
        assert completions == 1


def test_rerun_replaces_flags_instead_of_duplicating(
    db: Database, settings: Settings, rg1_path: Path
) -> None:
    job_id = queue(db, add_study(db, settings, rg1_path, 1))
    pipeline = build_pipeline(settings)
    for attempt in range(2):
        with db.session() as session:
            session.execute(
                CheckJob.__table__.update()
                .where(CheckJob.id == job_id)
                .values(status=JobStatus.QUEUED)
            )
        with db.session() as session:
            assert jobs.claim_next(
                session, worker_id=f"w{attempt}", lease=LEASE, quiet_period=NO_QUIET
            )
        with db.session() as session:
            inputs = jobs.load_inputs(session, job_id=job_id, files_dir=settings.files_dir)
        result = pipeline.run(inputs)
        result.flags = result.flags + result.flags  # a duplicated flag is stored once
        with db.session() as session:
            assert jobs.complete_job(session, job_id=job_id, worker_id=f"w{attempt}", result=result)
    with db.session() as session:
        keys = session.scalars(select(Flag.key).where(Flag.check_job_id == job_id)).all()
    assert keys and len(keys) == len(set(keys))


def test_exhausted_job_fails_with_error_and_can_be_retried(
    db: Database, settings: Settings, rg1_path: Path
) -> None:
    job_id = queue(db, add_study(db, settings, rg1_path, 1), max_attempts=1)
    short = timedelta(milliseconds=50)
    with db.session() as session:
        assert jobs.claim_next(session, worker_id="dies", lease=short, quiet_period=NO_QUIET)
    time.sleep(0.1)
    with db.session() as session:
        assert jobs.claim_next(session, worker_id="b", lease=LEASE, quiet_period=NO_QUIET) is None
    with db.session() as session:
        job = session.get(CheckJob, job_id)
        assert job is not None and job.status == JobStatus.FAILED
        assert job.error is not None and "Abandoned after 1 attempt" in job.error
    with db.session() as session:
        jobs.retry_check(session, job_id=job_id, actor="t")
    with db.session() as session, pytest.raises(ConflictError, match="only a failed job"):
        jobs.retry_check(session, job_id=job_id, actor="t")
    worker = Worker(
        db,
        lambda: build_pipeline(settings),
        files_dir=settings.files_dir,
        lease_s=5,
        poll_interval_s=0.05,
        quiet_period_s=0.05,
    )
    assert run_one(worker)
    with db.session() as session:
        job = session.get(CheckJob, job_id)
        assert job is not None and job.status == JobStatus.SUCCEEDED and job.error is None


def test_failed_pipeline_keeps_its_error(db: Database, settings: Settings, rg1_path: Path) -> None:
    """A model endpoint that is down fails the job with a clear error (no silent fallback)."""
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job_id = queue(db, add_study(db, settings, rg1_path, 1))
    down = settings.model_copy(deep=True)
    down.model.backend = ModelBackend.OPENAI
    down.model.openai_base_url = f"http://127.0.0.1:{port}/v1"
    down.model.timeout_s = 2
    worker = Worker(
        db,
        lambda: build_pipeline(down),
        files_dir=settings.files_dir,
        lease_s=5,
        poll_interval_s=0.05,
        quiet_period_s=0.05,
    )
    assert run_one(worker)
    with db.session() as session:
        job = session.get(CheckJob, job_id)
        assert job is not None
        assert job.status == JobStatus.FAILED
        assert job.error and str(port) in job.error


def test_quiet_period_and_late_instance(db: Database, settings: Settings, rg1_path: Path) -> None:
    uid = add_study(db, settings, rg1_path, 1)
    job_id = queue(db, uid)
    # Deterministic on a loaded machine: a quiet period far longer than any test step, then the
    # study's last instance moved back past it (rather than sleeping and racing the clock).
    quiet = timedelta(hours=1)
    with db.session() as session:  # the study just received its (first) instance: not yet
        assert jobs.claim_next(session, worker_id="w", lease=LEASE, quiet_period=quiet) is None
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
        assert study is not None and study.last_instance_at is not None
        study.last_instance_at = study.last_instance_at - timedelta(hours=2)
    with db.session() as session:
        assert jobs.claim_next(session, worker_id="w", lease=LEASE, quiet_period=quiet) == job_id
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
        assert study is not None and study.status == StudyStatus.RECEIVING


@pytest.mark.integration
def test_leases_use_the_database_clock(
    pg_url: str, rg1_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL every host computes leases from the server's now(), not its own clock."""
    from datetime import UTC, datetime

    import sqlalchemy as sa

    import app.services.clock
    from app.db.migrate import upgrade
    from tests.app.conftest import make_settings

    s = make_settings(tmp_path / "data", pg_url)
    upgrade(s.database_url)
    pg = Database(s.database_url)
    job_id = queue(pg, add_study(pg, s, rg1_path, 1))
    time.sleep(0.1)

    def skewed() -> datetime:  # this worker's clock is an hour fast
        return datetime.now(UTC) + timedelta(hours=1)

    monkeypatch.setattr(app.services.clock, "utcnow", skewed)
    monkeypatch.setattr(jobs, "utcnow", skewed, raising=False)
    with pg.session() as session:
        assert jobs.claim_next(session, worker_id="w", lease=LEASE, quiet_period=timedelta(0))
    with pg.engine.connect() as conn:
        skew = conn.execute(
            sa.text(
                "SELECT EXTRACT(EPOCH FROM (lease_expires_at - started_at)) FROM check_jobs "
                "WHERE id = :id"
            ),
            {"id": job_id},
        ).scalar_one()
        started_vs_db = conn.execute(
            sa.text(
                "SELECT EXTRACT(EPOCH FROM (now() - started_at)) FROM check_jobs WHERE id = :id"
            ),
            {"id": job_id},
        ).scalar_one()
    assert float(skew) == LEASE.total_seconds()
    assert 0 <= float(started_vs_db) < 5
    pg.dispose()


def test_a_worker_that_lost_its_lease_stops_between_stages(
    db: Database, settings: Settings, rg1_path: Path
) -> None:
    from app.services.errors import LeaseLostError

    job_id = queue(db, add_study(db, settings, rg1_path, 1))
    with db.session() as session:
        assert jobs.claim_next(session, worker_id="w", lease=LEASE, quiet_period=NO_QUIET)
        inputs = jobs.load_inputs(session, job_id=job_id, files_dir=settings.files_dir)
    pipeline = build_pipeline(settings)
    with pytest.raises(LeaseLostError, match=f"check job {job_id}: lease lost before the render"):
        pipeline.run(inputs, should_stop=lambda: True)
    calls = iter([False, True])  # lost while rendering: stops before the checks
    with pytest.raises(LeaseLostError, match="before the check stage"):
        pipeline.run(inputs, should_stop=lambda: next(calls))
    assert pipeline.run(inputs, should_stop=lambda: False).flags
