"""The worklist's per-study rows agree with the flags and reviews they summarise.

Each study's ``study_worklist`` row is derived data, kept by the writes that change it (check
queued, check completed, flag reviewed). This test drives those writes through the real services
and worker in a seeded random order and, after every step, compares the worklist's answer with a
count made directly from the flags and reviews; it also checks the migration's backfill against the
same count, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from app.db.migrate import downgrade, upgrade
from app.db.models import CheckJob, Flag, ReviewDecision, Study, WorklistRow
from app.db.session import Database
from app.services import jobs
from app.services.factory import build_pipeline
from app.services.reports import ReportSubmission, submit_report
from app.services.reviews import review_flag
from app.services.worklist import (
    SEVERITY_RANK,
    WorklistFilter,
    next_unreviewed,
    rebuild_worklist,
    worklist,
)
from app.settings import Settings
from app.worker.runner import Worker
from tests.app.test_jobs import add_study, run_one

FLAGGED = ReportSubmission(
    findings="There is a small right pleural effusion. No pneumothorax.",
    impression="Small left pleural effusion.",
)
CLEAN = ReportSubmission(
    findings="The lungs are clear. No pleural effusion.", impression="No acute disease."
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


def test_rows_follow_checks_and_reviews(settings: Settings, rg1_path: Path) -> None:
    db = Database(settings.database_url)
    worker = make_worker(db, settings)
    rng = random.Random(7)
    uids = [add_study(db, settings, rg1_path, i) for i in range(4)]  # each with a flagged report
    assert_worklist_agrees(db)  # studies without a check: on the list, nothing open
    for _ in range(14):
        uid = rng.choice(uids)
        action = rng.choice(["check", "check", "review", "review", "new_report"])
        with db.session() as session:
            study = session.scalar(select(Study).where(Study.study_instance_uid == uid))
            assert study is not None
            open_flags = (
                [
                    f.id
                    for j in study.jobs
                    if j.id == max(x.id for x in study.jobs)
                    for f in j.flags
                    if not f.reviews
                ]
                if study.jobs
                else []
            )
        if action == "review" and open_flags:
            with db.session() as session:
                review_flag(
                    session,
                    flag_id=rng.choice(open_flags),
                    decision=rng.choice(list(ReviewDecision)),
                    comment=None,
                    actor="t",
                )
        elif action == "new_report":
            with db.session() as session:
                submit_report(
                    session, study_uid=uid, submission=rng.choice([CLEAN, FLAGGED]), actor="t"
                )
        else:
            with db.session() as session:
                _, created = jobs.request_check(
                    session, study_uid=uid, actor="t", max_attempts=3, report_version=None
                )
            assert_worklist_agrees(db)  # a queued check: its study has nothing open until it runs
            if created:
                assert run_one(worker)
        assert_worklist_agrees(db)
    db.dispose()


def test_migration_backfill_matches_the_services(settings: Settings, rg1_path: Path) -> None:
    db = Database(settings.database_url)
    worker = make_worker(db, settings)
    uids = [add_study(db, settings, rg1_path, i) for i in range(3)]
    for uid in uids[:2]:
        with db.session() as session:
            jobs.request_check(
                session, study_uid=uid, actor="t", max_attempts=3, report_version=None
            )
        assert run_one(worker, timeout=timedelta(seconds=30).total_seconds())
    with db.session() as session:
        first = session.scalar(select(Flag).join(CheckJob).order_by(Flag.id))
        assert first is not None
        review_flag(
            session, flag_id=first.id, decision=ReviewDecision.ACCEPTED, comment=None, actor="t"
        )
    with db.session() as session:
        kept = {
            r.study_id: (r.latest_job_id, r.flags, r.open_flags, r.open_warning, r.top_rank)
            for r in session.scalars(select(WorklistRow))
        }
        assert any(v[2] for v in kept.values())  # something is open: the comparison means something
    db.dispose()
    downgrade(settings.database_url, "0009")
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        filled = {
            r.study_id: (r.latest_job_id, r.flags, r.open_flags, r.open_warning, r.top_rank)
            for r in session.scalars(select(WorklistRow))
        }
        study_ids = set(session.scalars(select(Study.id)))
        assert len(study_ids) == 3 and len(kept) == 2  # the unchecked study has no row yet
        assert filled == {k: kept.get(k, (None, 0, 0, 0, 0)) for k in study_ids}
        session.execute(delete(WorklistRow))
    with db.session() as session:  # after a bulk load: rebuilt from the flags
        assert rebuild_worklist(session) == 3
    assert_worklist_agrees(db)
    db.dispose()


@pytest.mark.parametrize(
    "flt", [WorklistFilter(severity="warning"), WorklistFilter(review="reviewed")]
)
def test_filters_read_the_rows(settings: Settings, rg1_path: Path, flt: WorklistFilter) -> None:
    db = Database(settings.database_url)
    worker = make_worker(db, settings)
    uid = add_study(db, settings, rg1_path, 1)
    with db.session() as session:
        jobs.request_check(session, study_uid=uid, actor="t", max_attempts=3, report_version=None)
    assert run_one(worker)
    with db.session() as session:
        flags = session.scalars(select(Flag)).all()
        assert flags and {f.severity for f in flags} == {"warning"}
        before = [i["study_instance_uid"] for i in worklist(session, flt)[0]]
        for f in flags:
            review_flag(
                session, flag_id=f.id, decision=ReviewDecision.DISMISSED, comment=None, actor="t"
            )
    with db.session() as session:
        after = [i["study_instance_uid"] for i in worklist(session, flt)[0]]
    if flt.severity:  # an open warning, then none
        assert (before, after) == ([uid], [])
    else:  # not yet reviewed, then reviewed
        assert (before, after) == ([], [uid])
    db.dispose()
