"""A real RadCheck stack on loopback for the dashboard tests: `radcheck demo`, users created with
`radcheck user create`, then `radcheck serve` (API + dashboard) on free ports with a temp SQLite.

The demo study gets a second report version with two slips (a laterality conflict and a
pneumothorax stated present then absent) and is checked again, so it has two open flags.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

PASSWORD = "correct horse battery"
SECOND_REPORT = {
    "indication": "Cough and fever.",
    "findings": "PA view of the chest. The heart size is normal. There is a small right pleural "
    "effusion. There is a moderate left pneumothorax.",
    "impression": "Small left pleural effusion. No pneumothorax.",
    "result_status": "P",  # a preliminary report from the RIS, checked before it is signed
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    api_url: str
    ui_url: str
    integration_key: str
    study_uid: str
    database_url: str

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def audit(self, action_prefix: str) -> list[tuple[str, str]]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT actor, action FROM audit_events WHERE action LIKE :p ORDER BY id"),
                {"p": action_prefix + "%"},
            ).all()
        engine.dispose()
        return [(str(a), str(b)) for a, b in rows]


def _wait(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def start_stack(tmp: Path, *, ui: bool) -> Iterator[Stack]:
    api_port, ui_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")},
        "RADCHECK_STORAGE__DATA_DIR": str(tmp / "data"),
        "RADCHECK_UI__PORT": str(ui_port),
        "RADCHECK_WORKER__POLL_INTERVAL_S": "0.1",
        "RADCHECK_INGEST__QUIET_PERIOD_S": "0.1",
        "RADCHECK_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
    }
    stack = Stack(
        data_dir=tmp / "data",
        env=env,
        api_url=f"http://127.0.0.1:{api_port}/api/v1",
        ui_url=f"http://127.0.0.1:{ui_port}",
        integration_key="",
        study_uid="",
        database_url=f"sqlite:///{(tmp / 'data' / 'radcheck.db').resolve()}",
    )
    demo = stack.cli("demo")
    assert demo.returncode == 0, demo.stderr
    import json

    stack.study_uid = json.loads(demo.stdout)["study_instance_uid"]
    for username, name, role in (
        ("jdoe", "Dr Jane Doe", "radiologist"),
        ("boss", "Admin Boss", "admin"),
    ):
        made = stack.cli(
            "user",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--username",
            username,
            stdin=PASSWORD + "\n",
        )
        assert made.returncode == 0, made.stderr
    key = stack.cli("apikey", "create", "--role", "integration", "--name", "test-ris")
    assert key.returncode == 0, key.stderr
    stack.integration_key = key.stdout.strip()
    args = [sys.executable, "-m", "app.cli", "serve", "--port", str(api_port)]
    if not ui:
        args.append("--no-ui")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"{stack.api_url}/health", proc)
        if ui:
            _wait(f"{stack.ui_url}/_stcore/health", proc)
        headers = {"X-API-Key": stack.integration_key}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as c:
            assert (
                c.post(f"/studies/{stack.study_uid}/reports", json=SECOND_REPORT).status_code == 201
            )
            job = c.post(f"/studies/{stack.study_uid}/checks", json={}).json()
            deadline = time.monotonic() + 120
            while c.get(f"/checks/{job['id']}").json()["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, "the second check did not finish"
                time.sleep(0.2)
            done = c.get(f"/checks/{job['id']}").json()
            assert done["status"] == "succeeded" and len(done["flags"]) == 2, done
        yield stack
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from start_stack(tmp_path_factory.mktemp("stack"), ui=False)
