"""PACS benchmark: RadCheck's DICOM doors side by side with Orthanc, on this machine, in one run.

Three measurements, loopback only, every server fresh (its own PostgreSQL database or Orthanc
index and its own storage folder in a temp dir):

- ``ingest``: the same folder of N distinct instances (deep copies of pydicom-data's CT_small,
  MR_small and RG1_UNCR with new Study/Series/SOP UIDs, cycled) sent (1) by C-STORE with dcmtk's
  ``storescu`` (one association) into ``radcheck dicom listen`` and into Orthanc, and (2) by STOW-RS
  with dicomweb-client (``--stow-batch`` instances per request, datasets read before the clock
  starts; the client's encoding time counts for both) into RadCheck's ``/dicomweb`` and Orthanc's
  DICOMweb plugin. Instances/s, MB/s (file bytes) and the RadCheck/Orthanc ratio.
- ``stow_memory``: idle RSS of the RadCheck API process, then one STOW-RS request of about
  ``--big-mb`` MB (RG1 copies, generated and sent chunked so the client never holds it) while a
  thread samples ``VmRSS``; the peak is also read from ``VmHWM`` after resetting it
  (``/proc/PID/clear_refs`` = 5).
- ``qido``: the same ``--studies`` one-instance studies (MR_small copies: 100 patients, dates over
  2021, unique accession numbers) stored in RadCheck and in Orthanc by STOW-RS, then study searches
  of a few shapes, each ``--queries`` times over one keep-alive connection: p50/p99 latency.

RadCheck runs as its own processes (``python -m app.cli serve --no-ui --no-worker``,
``python -m app.cli dicom listen``) on PostgreSQL (``--pg-admin-url``; a throw-away database per
server). Benchmarks are not assertions: read the JSON.

Usage: ``nice python bench/pacs.py [--out bench/results/pacs.json] [--n 150] [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import sqlalchemy as sa
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.orthanc import OrthancServer, free_port  # noqa: E402

SOURCES = ("CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm")
SENDER = "BENCHSCU"
RADCHECK_AET = "RADCHECK"


def _testdata(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        raise SystemExit(f"pydicom-data has no {name}")
    return pydicom.dcmread(str(path))


def new_instance(template: Dataset, **attrs: Any) -> Dataset:
    """A deep copy of ``template`` that is a new instance of a new study (or the given one)."""
    out = copy.deepcopy(template)
    sop = generate_uid()
    out.SOPInstanceUID = sop
    out.file_meta.MediaStorageSOPInstanceUID = sop
    out.SeriesInstanceUID = generate_uid()
    out.StudyInstanceUID = generate_uid()
    for key, value in attrs.items():
        setattr(out, key, value)
    return out


def encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_folder(folder: Path, n: int) -> tuple[list[Path], int]:
    templates = [_testdata(name) for name in SOURCES]
    folder.mkdir(parents=True)
    paths: list[Path] = []
    total = 0
    for i in range(n):
        data = encode(new_instance(templates[i % len(templates)], AccessionNumber=f"B{i:06d}"))
        path = folder / f"{i:05d}.dcm"
        path.write_bytes(data)
        paths.append(path)
        total += len(data)
    return paths, total


# --- servers ---------------------------------------------------------------------------------


class PgDatabases:
    """Throw-away PostgreSQL databases, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def create(self) -> str:
        name = f"radcheck_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


def radcheck_env(db_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RADCHECK_DATABASE__URL": db_url,
        "RADCHECK_STORAGE__DATA_DIR": str(data_dir),
        "RADCHECK_LOG_LEVEL": "WARNING",
        **extra,
    }


def prepare_radcheck(db_url: str, data_dir: Path) -> str:
    """Schema upgraded, data dir made; returns an integration API key."""
    from app.db.migrate import upgrade
    from app.db.session import Database
    from app.services.auth import create_api_key

    data_dir.mkdir(parents=True, mode=0o700)
    upgrade(db_url)
    db = Database(db_url)
    try:
        with db.session() as session:
            _, key = create_api_key(session, name="bench", role="integration")
    finally:
        db.dispose()
    return key


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def radcheck_api(db_url: str, data_dir: Path) -> Iterator[tuple[str, str, int]]:
    """``radcheck serve`` as its own process; yields (base URL, API key, PID)."""
    key = prepare_radcheck(db_url, data_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "app.cli", "serve", "--no-ui", "--no-worker"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        env=radcheck_env(db_url, data_dir, RADCHECK_DICOMWEB__PUBLIC_BASE_URL=url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"radcheck serve exited: {process.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            return httpx.get(f"{url}/api/v1/health", timeout=2).status_code < 500
        except httpx.TransportError:
            return False

    try:
        wait_until(up, 120, "radcheck serve")
        yield url, key, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextlib.contextmanager
def radcheck_listener(db_url: str, data_dir: Path) -> Iterator[int]:
    """``radcheck dicom listen`` as its own process; yields its port."""
    prepare_radcheck(db_url, data_dir)
    port = free_port()
    env = radcheck_env(
        db_url,
        data_dir,
        RADCHECK_LISTENER__ALLOWED_CALLING_AES=json.dumps([SENDER]),
        RADCHECK_LISTENER__MIN_FREE_BYTES="0",
    )
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "app.cli", "dicom", "listen"),
            *("--host", "127.0.0.1", "--port", str(port)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: echo(RADCHECK_AET, port), 120, "the listener")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=60)


def echo(aet: str, port: int) -> bool:
    result = subprocess.run(
        ["echoscu", "-aet", SENDER, "-aec", aet, "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
    )
    return result.returncode == 0


# --- measurements ----------------------------------------------------------------------------


def rate(count: int, nbytes: int, seconds: float) -> dict[str, float]:
    return {
        "seconds": round(seconds, 3),
        "instances_per_s": round(count / seconds, 2),
        "mb_per_s": round(nbytes / 1e6 / seconds, 2),
    }


def storescu(aet: str, port: int, folder: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aet", SENDER, "-aec", aet, "+sd", "127.0.0.1", str(port), str(folder)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {aet} failed: {result.stderr[-2000:]}")
    return elapsed


def stow(client: DICOMwebClient, datasets: list[Dataset], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(datasets), batch):
        answer = client.store_instances(datasets[i : i + batch])
        failed = answer.get("FailedSOPSequence") or []
        if len(failed):
            raise RuntimeError(f"STOW-RS failed {len(failed)} instances")
    return time.perf_counter() - start


def radcheck_count(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM instances")).scalar_one())
    finally:
        engine.dispose()


def bench_ingest(
    work: Path, pg: PgDatabases, paths: list[Path], nbytes: int, batch: int
) -> dict[str, Any]:
    n = len(paths)
    folder = paths[0].parent
    out: dict[str, Any] = {}
    # C-STORE
    db_url = pg.create()
    with radcheck_listener(db_url, work / "rc-dimse") as port:
        seconds = storescu(RADCHECK_AET, port, folder)
    assert radcheck_count(db_url) == n, "RadCheck's listener did not store every instance"
    radcheck = rate(n, nbytes, seconds)
    with OrthancServer(work / "orthanc-dimse") as orthanc:
        seconds = storescu(orthanc.aet, orthanc.dicom_port, folder)
        assert orthanc.instance_count() == n
    orth = rate(n, nbytes, seconds)
    out["c_store"] = {
        "sender": "dcmtk storescu, one association",
        "radcheck": radcheck,
        "orthanc": orth,
        "ratio_instances_per_s": round(radcheck["instances_per_s"] / orth["instances_per_s"], 3),
    }
    # STOW-RS
    datasets = [pydicom.dcmread(p) for p in paths]
    db_url = pg.create()
    with radcheck_api(db_url, work / "rc-stow") as (url, key, _pid):
        client = DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": key}, timeout=600)
        seconds = stow(client, datasets, batch)
    assert radcheck_count(db_url) == n, "RadCheck's STOW-RS did not store every instance"
    radcheck = rate(n, nbytes, seconds)
    with OrthancServer(work / "orthanc-stow") as orthanc:
        seconds = stow(DICOMwebClient(orthanc.dicomweb_url, timeout=600), datasets, batch)
        assert orthanc.instance_count() == n
    orth = rate(n, nbytes, seconds)
    out["stow_rs"] = {
        "sender": f"dicomweb-client store_instances, {batch} instances per request",
        "radcheck": radcheck,
        "orthanc": orth,
        "ratio_instances_per_s": round(radcheck["instances_per_s"] / orth["instances_per_s"], 3),
    }
    return out


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def bench_stow_memory(work: Path, pg: PgDatabases, big_mb: int) -> dict[str, Any]:
    rg1 = _testdata("RG1_UNCR.dcm")
    part_bytes = len(encode(rg1))
    parts = max(1, round(big_mb * 1e6 / part_bytes))
    boundary = uuid.uuid4().hex
    sent = 0
    study_uid = generate_uid()

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(parts):
            data = encode(new_instance(rg1, StudyInstanceUID=study_uid))
            head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            for chunk in (head, *(data[i : i + 65536] for i in range(0, len(data), 65536))):
                sent += len(chunk)
                yield chunk
            yield b"\r\n"
            sent += 2
        yield f"--{boundary}--\r\n".encode()

    db_url = pg.create()
    with radcheck_api(db_url, work / "rc-big") as (url, key, pid):
        # warm up: one small STOW so the idle figure includes imported code paths
        DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": key}).store_instances(
            [new_instance(_testdata("MR_small.dcm"))]
        )
        idle_rss = proc_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        peak_sampled = idle_rss
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_sampled
            while not stop.is_set():
                with contextlib.suppress(OSError, RuntimeError):
                    peak_sampled = max(peak_sampled, proc_kb(pid, "VmRSS"))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        response = httpx.post(
            f"{url}/dicomweb/studies",
            content=body(),
            headers={
                "X-API-Key": key,
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=1800,
        )
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        hwm = proc_kb(pid, "VmHWM")
        if response.status_code != 200:
            raise RuntimeError(
                f"big STOW-RS answered {response.status_code}: {response.text[:500]}"
            )
    return {
        "body_bytes": sent,
        "parts": parts,
        "transfer": "chunked (no Content-Length), 64 KiB chunks",
        "seconds": round(seconds, 2),
        "mb_per_s": round(sent / 1e6 / seconds, 2),
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "peak_rss_mb_sampled": round(peak_sampled / 1024, 1),
        "peak_rss_mb_vmhwm": round(hwm / 1024, 1),
        "peak_minus_idle_mb": round((hwm - idle_rss) / 1024, 1),
    }


def qido_datasets(count: int) -> list[Dataset]:
    mr = _testdata("MR_small.dcm")
    start = date(2021, 1, 1)
    out = []
    for i in range(count):
        out.append(
            new_instance(
                mr,
                PatientID=f"P{i % 100:04d}",
                PatientName=f"Bench^Patient{i % 100:04d}",
                AccessionNumber=f"Q{i:06d}",
                StudyDate=(start + timedelta(days=i * 365 // count)).strftime("%Y%m%d"),
                StudyDescription="Bench study",
            )
        )
    return out


QUERY_SHAPES: dict[str, Callable[[int], dict[str, str]]] = {
    "all studies, paged 100": lambda i: {"limit": "100", "offset": str((i * 100) % 1000)},
    "PatientID": lambda i: {"PatientID": f"P{i % 100:04d}"},
    "StudyDate range (one month)": lambda i: {
        "StudyDate": f"2021{(i % 12) + 1:02d}01-2021{(i % 12) + 1:02d}28"
    },
    "AccessionNumber": lambda i: {"AccessionNumber": f"Q{(i * 7) % 1000:06d}"},
}


def latencies(http: httpx.Client, path: str, shape: Callable[[int], dict[str, str]], n: int) -> Any:
    times = []
    counts = []
    for i in range(n):
        start = time.perf_counter()
        response = http.get(path, params=shape(i), headers={"Accept": "application/dicom+json"})
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code not in (200, 204):
            raise RuntimeError(f"QIDO {path} {shape(i)} answered {response.status_code}")
        counts.append(len(response.json()) if response.status_code == 200 else 0)
    qs = statistics.quantiles(times, n=100)
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(qs[98], 2),
        "mean_results": round(statistics.mean(counts), 1),
    }


def bench_qido(work: Path, pg: PgDatabases, studies: int, queries: int) -> dict[str, Any]:
    datasets = qido_datasets(studies)
    out: dict[str, Any] = {
        "data": f"{studies} studies, one MR_small instance each (64x64), 100 patients, "
        "StudyDate spread over 2021, unique accession numbers; stored by STOW-RS",
        "queries_per_shape": queries,
        "shapes": {},
    }
    db_url = pg.create()
    with (
        radcheck_api(db_url, work / "rc-qido") as (url, key, _pid),
        OrthancServer(work / "orthanc-qido") as orthanc,
    ):
        stow(DICOMwebClient(f"{url}/dicomweb", headers={"X-API-Key": key}), datasets, 50)
        stow(DICOMwebClient(orthanc.dicomweb_url), datasets, 50)
        with (
            httpx.Client(base_url=f"{url}/dicomweb", headers={"X-API-Key": key}) as rc,
            httpx.Client(base_url=orthanc.dicomweb_url) as oc,
        ):
            for name, shape in QUERY_SHAPES.items():
                latencies(rc, "/studies", shape, 5)  # warm up both
                latencies(oc, "/studies", shape, 5)
                r = latencies(rc, "/studies", shape, queries)
                o = latencies(oc, "/studies", shape, queries)
                out["shapes"][name] = {
                    "radcheck": r,
                    "orthanc": o,
                    "ratio_p50_orthanc_over_radcheck": round(o["p50_ms"] / r["p50_ms"], 3),
                }
    return out


def versions() -> dict[str, str]:
    orthanc = subprocess.run(
        [shutil.which("Orthanc") or "/usr/sbin/Orthanc", "--version"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    storescu_v = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout
    from importlib import metadata

    return {
        "python": platform.python_version(),
        "orthanc": orthanc[0] if orthanc else "?",
        "dcmtk": storescu_v.splitlines()[0] if storescu_v else "?",
        **{p: metadata.version(p) for p in ("pydicom", "pynetdicom", "dicomweb-client")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/pacs.json")
    parser.add_argument("--n", type=int, default=150, help="instances in the ingest folder")
    parser.add_argument("--stow-batch", type=int, default=10)
    parser.add_argument("--big-mb", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to try the script")
    args = parser.parse_args()
    if args.quick:
        args.n, args.big_mb, args.studies, args.queries = 12, 50, 50, 20
    load_before = os.getloadavg()
    started = time.perf_counter()
    pg = PgDatabases(args.pg_admin_url)
    with tempfile.TemporaryDirectory(prefix="radcheck-bench-pacs-") as tmp:
        work = Path(tmp)
        try:
            paths, nbytes = write_folder(work / "folder", args.n)
            result: dict[str, Any] = {
                "benchmark": "pacs",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                "versions": versions(),
                "database": "PostgreSQL (loopback), a fresh database per RadCheck server",
                "folder": {
                    "instances": args.n,
                    "bytes": nbytes,
                    "made_of": "cycled deep copies (new UIDs) of " + ", ".join(SOURCES),
                },
            }
            result["ingest"] = bench_ingest(work, pg, paths, nbytes, args.stow_batch)
            shutil.rmtree(work / "rc-dimse")
            shutil.rmtree(work / "rc-stow")
            result["stow_memory"] = bench_stow_memory(work, pg, args.big_mb)
            shutil.rmtree(work / "rc-big")
            result["qido"] = bench_qido(work, pg, args.studies, args.queries)
        finally:
            pg.drop_all()
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
