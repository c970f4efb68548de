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
from app.services.reports import ReportSubmission, submit_report
from app.services.reviews import review_flag
from app.services.worklist import (
    WorklistFilter,
    rebuild_worklist,
    worklist,
)
from app.settings import Settings
from tests.app.jobs_support import FLAGGED, add_study, assert_worklist_agrees, make_worker, run_one

CLEAN = ReportSubmission(
    findings="The lungs are clear. No pleural effusion.", impression="No acute disease."
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
