"""The demo: a real chest radiograph and a report with deliberate slips, checked end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from app.db.models import CheckJob, JobStatus
from app.db.session import Database
from app.services.factory import build_pipeline
from app.services.ingest import decode_limits, ingest_instance
from app.services.jobs import request_check
from app.services.reports import ReportSubmission, submit_report
from app.services.storage import ContentStore
from app.settings import Settings
from app.worker.runner import Worker

__all__ = ["DEMO_REPORT", "run_demo"]

# The demo study is complete as soon as it is stored (one image): a short quiet period suffices.
DEMO_QUIET_PERIOD_S = 0.1

# Written for the demo (not a real patient's report). It contains two slips a checker should catch:
# the side of the effusion differs between findings and impression, and the findings describe a
# lateral view although the image is a PA radiograph.
DEMO_REPORT = ReportSubmission(
    indication="Cough and fever.",
    comparison="None.",
    findings=(
        "PA and lateral views of the chest. The heart size is normal. "
        "There is a small right pleural effusion. No pneumothorax. "
        "The lungs are otherwise clear."
    ),
    impression="Small left pleural effusion. No pneumothorax.",
)


def default_demo_dicom() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    if path is None:
        raise FileNotFoundError(
            "The demo image RG1_UNCR.dcm was not found: install the 'pydicom-data' package "
            "(pip install pydicom-data) or pass --dicom FILE."
        )
    return Path(str(path))


def run_demo(settings: Settings, dicom: Path | None = None) -> dict[str, Any]:
    """Ingest, report, check (synchronously, through the worker's path) and summarise."""
    path = dicom or default_demo_dicom()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass an existing DICOM file with --dicom.")
    db = Database(settings.database_url)
    store = ContentStore(settings.files_dir)
    try:
        with db.session() as session:
            outcome = ingest_instance(
                session,
                store,
                path.read_bytes(),
                actor="demo",
                limits=decode_limits(settings),
            )
        with db.session() as session:
            submit_report(
                session, study_uid=outcome.study_instance_uid, submission=DEMO_REPORT, actor="demo"
            )
            job, _ = request_check(
                session,
                study_uid=outcome.study_instance_uid,
                actor="demo",
                max_attempts=settings.worker.max_attempts,
                report_version=None,
            )
            job_id = job.id
        worker = Worker(
            db,
            lambda: build_pipeline(settings),
            files_dir=settings.files_dir,
            lease_s=settings.worker.lease_s,
            poll_interval_s=0.05,
            quiet_period_s=DEMO_QUIET_PERIOD_S,
            worker_id="demo",
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            worker.run_once()
            with db.session() as session:
                current = session.get(CheckJob, job_id)
                if current is not None and current.status in (
                    JobStatus.SUCCEEDED,
                    JobStatus.FAILED,
                ):
                    break
            time.sleep(DEMO_QUIET_PERIOD_S)
        with db.session() as session:
            done = session.get(CheckJob, job_id)
            assert done is not None
            return {
                "study_instance_uid": outcome.study_instance_uid,
                "check_job": done.id,
                "status": done.status,
                "error": done.error if done.status == JobStatus.FAILED else None,
                "verdict_simple": done.verdict_simple,
                "selected_image": done.selection.get("chosen"),
                "flags": [
                    {
                        "subtype": f.subtype,
                        "severity": f.severity,
                        "section": f.section,
                        "sentence_index": f.sentence_index,
                        "message": f.message,
                    }
                    for f in done.flags
                ],
                "notice": "Unverified AI output: flags must be reviewed by a radiologist.",
            }
    finally:
        db.dispose()
