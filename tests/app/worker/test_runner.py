"""Killing the worker process in the middle of a check, then starting it again, finishes it once.

The model is the one part replaced here (no V100, no weights): the worker talks to an
OpenAI-compatible endpoint on loopback that answers slowly, so the check is reliably in flight when
the worker is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db.models import AuditEvent, CheckJob, Flag, JobStatus
from app.db.session import Database
from app.services import jobs
from app.settings import Settings
from tests.app.jobs_support import add_study

DELAY_S = 0.6


class SlowModel(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        time.sleep(DELAY_S)
        body = json.dumps(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": "scripted",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "N"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def slow_model() -> Iterator[str]:
    SlowModel.calls = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def start_worker(settings: Settings, model_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    env.update(
        {
            "RADCHECK_STORAGE__DATA_DIR": str(settings.storage.data_dir),
            "RADCHECK_DATABASE__URL": settings.database_url,
            "RADCHECK_WORKER__LEASE_S": "2",
            "RADCHECK_WORKER__POLL_INTERVAL_S": "0.1",
            "RADCHECK_INGEST__QUIET_PERIOD_S": "0.05",
            "RADCHECK_MODEL__BACKEND": "openai",
            "RADCHECK_MODEL__OPENAI_BASE_URL": model_url,
            "RADCHECK_MODEL__TIMEOUT_S": "30",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_check_finishes_exactly_once(
    settings: Settings, slow_model: str, rg1_path: Path
) -> None:
    db = Database(settings.database_url)
    uid = add_study(db, settings, rg1_path, 1)
    with db.session() as session:
        job, _ = jobs.request_check(
            session, study_uid=uid, actor="t", max_attempts=3, report_version=None
        )
        job_id = job.id

    first = start_worker(settings, slow_model)
    try:
        wait_until(lambda: SlowModel.calls >= 1, 120, "the check to reach the model")
        with db.session() as session:
            running = session.get(CheckJob, job_id)
            assert running is not None and running.status == JobStatus.RUNNING
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    with db.session() as session:
        killed = session.get(CheckJob, job_id)
        assert killed is not None
        assert (killed.status, killed.attempts) == (JobStatus.RUNNING, 1)

    second = start_worker(settings, slow_model)
    try:

        def finished() -> bool:
            with db.session() as session:
                j = session.get(CheckJob, job_id)
                return j is not None and j.status in {JobStatus.SUCCEEDED, JobStatus.FAILED}

        wait_until(finished, 180, "the check to finish after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    with db.session() as session:
        done = session.get(CheckJob, job_id)
        assert done is not None
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert done.attempts == 2
        keys = session.scalars(select(Flag.key).where(Flag.check_job_id == job_id)).all()
        assert len(keys) == len(set(keys)) and keys
        completions = session.scalar(
            select(func.count(AuditEvent.id)).where(
                AuditEvent.action == "check.completed", AuditEvent.object_id == str(job_id)
            )
        )
        assert completions == 1
    db.dispose()
