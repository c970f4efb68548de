"""Bounded loopback load on the read endpoints: 50 concurrent clients for 60 s, SQLite and PostgreSQL.

Starts `radcheck serve` on 127.0.0.1 with a temporary data directory, seeds studies (real DICOM from
pydicom-data, a report, a finished check each), then reads GET /studies, GET /studies/{uid} and
GET /checks/{id} with 50 concurrent keep-alive clients, twice: paced (a fixed total request rate, latency
measured from the scheduled send time) and saturated (closed loop: latency = clients / throughput).
Writes p50/p95/p99 latency, throughput and error counts as JSON.

    python bench/api_load.py --backend sqlite --backend postgresql --out bench/results/api_load.json

RadCheck runs as `radcheck serve --processes N` (`--processes`, default 2: one API process per core
of this 2-core machine; the check worker then runs as its own process). `--processes 1` measures
the single-process server.

Orthanc (Debian's, a throw-away instance) is measured in the same run as the reference: the same
studies uploaded, then its REST reads (a page of expanded studies, one study, its instances) under
the same two loads (`--backend orthanc`; on by default).

Target (DESIGN.md): p99 <= 100 ms at 50 concurrent clients, zero 5xx. Only 127.0.0.1 is targeted and
every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

WARMUP_S = 3.0
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REPORT = {
    "findings": "The heart size is normal. There is a small right pleural effusion. No pneumothorax.",
    "impression": "Small left pleural effusion.",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_instances(n: int) -> list[bytes]:
    src = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm", download=False))
    out = []
    for i in range(n):
        ds = src.copy()
        ds.StudyInstanceUID = f"2.25.{uuid.uuid4().int}"
        ds.SeriesInstanceUID = f"2.25.{uuid.uuid4().int}"
        ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = f"2024{(i % 12) + 1:02d}15"
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append(buf.getvalue())
    return out


def create_pg_database() -> tuple[str, str]:
    import sqlalchemy as sa

    name = f"radcheck_bench_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return name, sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(False)


def drop_pg_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return done.stdout.strip()


async def seed(base: str, key: str, studies: int) -> tuple[list[str], list[int]]:
    headers = {"X-API-Key": key}
    uids: list[str] = []
    jobs: list[int] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        for data in make_instances(studies):
            r = await client.post("/api/v1/instances", files=[("files", ("x.dcm", data))])
            r.raise_for_status()
            uid = r.json()["accepted"][0]["study_instance_uid"]
            (await client.post(f"/api/v1/studies/{uid}/reports", json=REPORT)).raise_for_status()
            job = await client.post(f"/api/v1/studies/{uid}/checks")
            job.raise_for_status()
            uids.append(uid)
            jobs.append(job.json()["id"])
        deadline = time.monotonic() + 120
        for job_id in jobs:
            while time.monotonic() < deadline:
                status = (await client.get(f"/api/v1/checks/{job_id}")).json()["status"]
                if status in {"succeeded", "failed"}:
                    break
                await asyncio.sleep(0.2)
    return uids, jobs


def summarise(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    if arr.size == 0:
        return {}
    return {
        "n": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "p99_ms": round(float(np.percentile(arr, 99)), 2),
        "max_ms": round(float(arr.max()), 2),
    }


Picker = Callable[[random.Random], tuple[str, str]]


def radcheck_picker(uids: list[str], jobs: list[int]) -> Picker:
    def pick(rng: random.Random) -> tuple[str, str]:
        kind = rng.choice(("list", "study", "check"))
        if kind == "list":
            return kind, f"/api/v1/studies?limit=20&offset={rng.randrange(0, len(uids))}"
        if kind == "study":
            return kind, f"/api/v1/studies/{rng.choice(uids)}"
        return kind, f"/api/v1/checks/{rng.choice(jobs)}"

    return pick


def orthanc_picker(ids: list[str]) -> Picker:
    """Orthanc's nearest equivalents: a page of expanded studies, one study, its instances."""

    def pick(rng: random.Random) -> tuple[str, str]:
        kind = rng.choice(("list", "study", "instances"))
        if kind == "list":
            return kind, f"/studies?expand&limit=20&since={rng.randrange(0, len(ids))}"
        if kind == "study":
            return kind, f"/studies/{rng.choice(ids)}"
        return kind, f"/studies/{rng.choice(ids)}/instances"

    return pick


async def load(
    base: str,
    headers: dict[str, str],
    pick: Picker,
    clients: int,
    seconds: float,
    rate: float | None,
) -> dict[str, Any]:
    """50 clients on keep-alive connections. With ``rate`` (total requests/s) each client sends on a
    fixed schedule and latency counts from the scheduled time (no coordinated omission); without it,
    each client sends as fast as answers come back (saturation)."""
    latencies: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    errors = 0
    start = time.perf_counter()
    stop_at = start + seconds
    measure_from = start + WARMUP_S
    interval = clients / rate if rate else 0.0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def one_client(index: int) -> None:
        nonlocal errors
        rng = random.Random(index)
        next_at = start + (index / clients) * interval
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=30, limits=limits
        ) as client:
            while True:
                if rate:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    t0 = next_at
                    next_at += interval
                else:
                    t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                kind, url = pick(rng)
                try:
                    r = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if t0 >= measure_from:  # the first seconds open 50 connections: warm-up
                    latencies.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(one_client(i) for i in range(clients)))
    elapsed = time.perf_counter() - start - WARMUP_S
    every = [x for v in latencies.values() for x in v]
    return {
        "mode": f"paced at {rate:g} requests/s in total" if rate else "saturation (closed loop)",
        "requests": len(every),
        "requests_per_s": round(len(every) / elapsed, 1),
        "overall": summarise(every),
        "by_endpoint": {k: summarise(v) for k, v in latencies.items()},
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "transport_errors": errors,
    }


def bench_backend(
    backend: str, clients: int, seconds: float, studies: int, rate: float, processes: int
) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="radcheck-bench-")
    env = {
        **os.environ,
        "RADCHECK_STORAGE__DATA_DIR": tmp,
        "RADCHECK_LOG_LEVEL": "WARNING",
        "RADCHECK_INGEST__QUIET_PERIOD_S": "0.05",
    }
    pg_name = None
    if backend == "postgresql":
        pg_name, url = create_pg_database()
        env["RADCHECK_DATABASE__URL"] = url
    try:
        run_cli(env, "db", "upgrade")
        key = run_cli(env, "apikey", "create", "--role", "integration", "--name", "bench")
        port = free_port()
        serve = ["serve", "--no-ui", "--port", str(port), "--processes", str(processes)]
        server = subprocess.Popen([sys.executable, "-m", "app.cli", *serve], env=env)
        started = time.monotonic()
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            uids, jobs = asyncio.run(seed(base, key, studies))
            # health answers once the first API process is up; give the others time to start
            time.sleep(max(0.0, 30.0 * (processes > 1) - (time.monotonic() - started)))
            pick, headers = radcheck_picker(uids, jobs), {"X-API-Key": key}
            paced = asyncio.run(load(base, headers, pick, clients, seconds, rate))
            saturated = asyncio.run(load(base, headers, pick, clients, seconds, None))
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        if pg_name:
            drop_pg_database(pg_name)
    return {
        "backend": backend,
        "api_processes": processes,
        "clients": clients,
        "seconds": seconds,
        "studies": studies,
        "paced": paced,
        "saturation": saturated,
    }


def bench_orthanc(clients: int, seconds: float, studies: int, rate: float) -> dict[str, Any]:
    """The reference: Debian's Orthanc (its own SQLite index) serving the same studies' reads."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.orthanc import OrthancServer, orthanc_missing

    missing = orthanc_missing()
    if missing:
        return {"backend": "orthanc", "skipped": missing}
    with OrthancServer(workdir=Path(tempfile.mkdtemp(prefix="orthanc-bench-"))) as orthanc:
        for data in make_instances(studies):
            orthanc.upload(data)
        ids = orthanc.studies()
        version = orthanc.client().get("/system").json().get("Version")
        pick = orthanc_picker(ids)
        paced = asyncio.run(load(orthanc.url, {}, pick, clients, seconds, rate))
        saturated = asyncio.run(load(orthanc.url, {}, pick, clients, seconds, None))
    return {
        "backend": f"orthanc {version} (REST, no auth)",
        "clients": clients,
        "seconds": seconds,
        "studies": len(ids),
        "paced": paced,
        "saturation": saturated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql", "orthanc"])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="Total requests/s of the paced run (50 clients x 2/s: a busy reading room)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="radcheck serve --processes (API processes)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/api_load.json"))
    args = parser.parse_args()
    results = [
        bench_orthanc(args.clients, args.seconds, args.studies, args.rate)
        if b == "orthanc"
        else bench_backend(b, args.clients, args.seconds, args.studies, args.rate, args.processes)
        for b in (args.backend or ["sqlite", "postgresql", "orthanc"])
    ]
    report = {
        "benchmark": "api_load",
        "target": {"p99_ms": 100, "server_errors_5xx": 0},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "load generator runs on the same machine as the server",
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
