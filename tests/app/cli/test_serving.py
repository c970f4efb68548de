"""``radcheck serve --processes 2``: two API processes share the port, the check worker runs as its
own process, each API process applies the connection limits, and stopping the parent stops them
all (real processes on loopback, SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.app.serve_support import (
    PARTIAL,
    connect_from,
    free_port,
    read_until_closed,
    wait_for,
)

REPO = Path(__file__).resolve().parents[3]
API = "/api/v1"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_two_api_processes_share_the_port_and_a_worker_process_runs_the_checks(
    tmp_path: Path, rg1_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "RADCHECK_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "RADCHECK_INGEST__QUIET_PERIOD_S": "0.05",
        "RADCHECK_API__HEADER_TIMEOUT_S": "1",
    }
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    key = subprocess.run(
        [*cli, "apikey", "create", "--role", "integration", "--name", "procs"],
        env=env, check=True, capture_output=True, text=True, timeout=120,
    ).stdout.strip()  # fmt: skip
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [*cli, "serve", "--no-ui", "--processes", "2", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=handle, stderr=handle,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}{API}"
    try:
        wait_for(f"{base}/health", proc, log, timeout_s=180)
        # both API processes are up (uvicorn's supervisor starts them; each logs its start-up)
        deadline = time.monotonic() + 120
        while log.read_text(errors="replace").count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        below = descendants(proc.pid)
        workers = [p for p in below if "app.cli worker" in command_line(p)]
        api = [p for p in below if "multiprocessing" in command_line(p) and p not in workers]
        assert len(workers) == 1, [command_line(p) for p in below]
        assert len(api) >= 2, [command_line(p) for p in below]

        # a check end to end: the API processes have no worker, the worker process runs it
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            r = client.post("/instances", files=[("files", ("x.dcm", rg1_path.read_bytes()))])
            assert r.status_code == 201, r.text
            uid = r.json()["accepted"][0]["study_instance_uid"]
            report = {"findings": "Small right pleural effusion.", "impression": "Left effusion."}
            assert client.post(f"/studies/{uid}/reports", json=report).status_code == 201
            job = client.post(f"/studies/{uid}/checks").json()
            deadline = time.monotonic() + 120
            while (status := client.get(f"/checks/{job['id']}").json()["status"]) not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline, f"check still {status}"
                time.sleep(0.2)
            assert status == "succeeded"
            ready = client.get("/ready").json()
            assert ready["worker_alive"] is True, ready
            # every connection, whichever process takes it, is under the configured limits:
            # half a request is answered 408 after RADCHECK_API__HEADER_TIMEOUT_S
            for _ in range(4):
                sock = connect_from("127.0.0.5", port)
                sock.sendall(PARTIAL)
                answer = read_until_closed(sock, time.monotonic() + 30)
                sock.close()
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
    finally:
        below = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # stopping the parent stops the API processes and the worker
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{p}").exists() and "app.cli" in command_line(p) for p in below):
        assert time.monotonic() < deadline, [command_line(p) for p in below]
        time.sleep(0.2)
