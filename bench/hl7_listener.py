"""HL7 listener throughput: ORU^R01 over MLLP to a stored report version, on SQLite and PostgreSQL.

Starts `radcheck hl7 listen` on 127.0.0.1 (a free port, temporary data directory), ingests one real
chest CR (pydicom-data RG1) with a known accession number, then sends ORU^R01 messages for it
(vendor-shaped: LOINC sections, escapes, repeating PID-3, Z-segment; each a new MSH-10, so each
stores a report version and queues a check): first on one connection, one message at a time
(ACK latency = send to ACK received; the ACK comes after the transaction committed), then on
several connections at once. Writes messages/s and ACK latency p50/p99 as JSON.

    python bench/hl7_listener.py --backend sqlite --backend postgresql --out bench/results/hl7_listener.json

Short and bounded: a few hundred messages per backend, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ACCESSION = "BENCH0001"


def message(control_id: str) -> bytes:
    segments = [
        f"MSH|^~\\&|RIS|HOSP|RADCHECK|HOSP|20261202101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        "PID|1||BENCHMRN^^^HOSP^MR~BENCH2^^^SSA^SS||BENCH^PATIENT||19500101|F",
        f"OBR|1|PL{control_id}|{ACCESSION}|71046^XR CHEST 2V^CPT4||||||||||||||||||||CR|F",
        "OBX|1|FT|18785-6^Reason^LN||Cough \\T\\ fever.||||||F",
        "OBX|2|FT|18782-3^Findings^LN||The heart size is normal.\\.br\\There is a small right "
        "pleural effusion.\\.br\\No pneumothorax.||||||F",
        "OBX|3|FT|19005-8^Impression^LN||Small right pleural effusion.||||||F",
        "ZPI|1|routing",
    ]
    return ("\r".join(segments) + "\r").encode()


def study_bytes() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm", download=False))
    ds.StudyInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.SeriesInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = ACCESSION
    ds.PatientID = "BENCHMRN"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def run_cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, check=True, timeout=300)


async def send_all(port: int, ids: list[str]) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    try:
        for control_id in ids:
            t0 = time.perf_counter()
            writer.write(b"\x0b" + message(control_id) + b"\x1c\x0d")
            await writer.drain()
            ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 60)
            latencies.append((time.perf_counter() - t0) * 1000)
            if b"MSA|AA|" not in ack:
                raise RuntimeError(f"not accepted: {ack[:200]!r}")
    finally:
        writer.close()
    return latencies


def summary(latencies: list[float], seconds: float) -> dict[str, Any]:
    arr = np.array(latencies)
    return {
        "messages": len(latencies),
        "seconds": round(seconds, 3),
        "messages_per_s": round(len(latencies) / seconds, 1),
        "ack_ms": {
            "p50": round(float(np.percentile(arr, 50)), 2),
            "p99": round(float(np.percentile(arr, 99)), 2),
            "max": round(float(arr.max()), 2),
        },
    }


def bench_backend(backend: str, n: int, connections: int) -> dict[str, Any]:
    import sqlalchemy as sa

    tmp = Path(tempfile.mkdtemp(prefix="radcheck-hl7-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    env.update({"RADCHECK_STORAGE__DATA_DIR": str(tmp), "PYTHONPATH": str(REPO)})
    pg_name = None
    if backend == "postgresql":
        pg_name = f"radcheck_hl7_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{pg_name}"'))
        admin.dispose()
        env["RADCHECK_DATABASE__URL"] = PG_ADMIN.rsplit("/", 1)[0] + f"/{pg_name}"
    proc = None
    try:
        run_cli(env, "db", "upgrade")
        dcm = tmp / "study.dcm"
        dcm.write_bytes(study_bytes())
        run_cli(env, "demo", "--dicom", str(dcm))  # ingests the study (and checks a demo report)
        port_box: list[int] = []
        ready = threading.Event()

        def pump() -> None:
            assert proc is not None and proc.stderr is not None
            for line in proc.stderr:
                if "hl7 listener on" in line:
                    port_box.append(int(line.split("127.0.0.1:")[1].split()[0]))
                    ready.set()
            ready.set()

        env["RADCHECK_LOG_LEVEL"] = "INFO"  # production level: one line per message
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "hl7", "listen", "--port", "0"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(120) or not port_box:
            raise RuntimeError("the listener did not start")
        port = port_box[0]
        asyncio.run(send_all(port, [f"W{i}" for i in range(10)]))  # warm-up
        t0 = time.perf_counter()
        seq = asyncio.run(send_all(port, [f"S{i}" for i in range(n)]))
        sequential = summary(seq, time.perf_counter() - t0)

        async def concurrent() -> list[list[float]]:
            per = n // connections
            return await asyncio.gather(
                *(send_all(port, [f"C{c}-{i}" for i in range(per)]) for c in range(connections))
            )

        t0 = time.perf_counter()
        conc = asyncio.run(concurrent())
        parallel = summary([x for lat in conc for x in lat], time.perf_counter() - t0)
        parallel["connections"] = connections
        return {"one_connection": sequential, "concurrent_connections": parallel}
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if pg_name:
            admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--n", type=int, default=300, help="messages per phase")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "hl7_listener.json"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "hl7_listener",
        "what": "ORU^R01 over MLLP on loopback -> committed report version + queued check -> ACK AA",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "backends": {},
    }
    for backend in args.backend or ["sqlite", "postgresql"]:
        results["backends"][backend] = bench_backend(backend, args.n, args.connections)
        print(backend, json.dumps(results["backends"][backend]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
