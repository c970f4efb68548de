"""Issue 16's attacks against a real ``radcheck serve``, each with its measured cost (JSON).

    python bench/hostile.py                     # JSON to bench/results/hostile.json, table on stdout

Starts ``radcheck serve --no-ui --migrate`` (SQLite, a temporary data directory, a free port on
127.0.0.1, model backend ``none``, every other setting at its default), creates an integration key
with ``radcheck apikey create``, then reproduces each item of issue 16 and records the answer next
to what it cost: seconds, the server's resident memory (``/proc/PID/status`` VmRSS / VmHWM), bytes
the client got to send, rows and files left behind, file modes. Only 127.0.0.1 (and 127.0.0.x as
source addresses) is used; every step has a timeout; the server and the data directory are removed
at the end. An item that fails to run is recorded with ``skipped`` and the reason, the others go on.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import select
import socket
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"
UID = "1.2.826.0.1.3680043.10.545.1616"
SENTENCE = "There is a small right pleural effusion without pneumothorax. "
MIB = 1024 * 1024
PARTIAL = b"GET /api/v1/health HTTP/1.1\r\nHost: radcheck\r\nX-Slow: "  # and then nothing
SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cache-control",
    "content-security-policy",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(f"pydicom-data has no {name}")
    return Path(str(path))


def dicom_bytes(index: int, **values: object) -> bytes:
    """RG1_UNCR (a chest CR) with this bench's UIDs and the given header values."""
    ds = pydicom.dcmread(testdata("RG1_UNCR.dcm"))
    ds.StudyInstanceUID = UID
    ds.SeriesInstanceUID = f"{UID}.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(
        f"{UID}.1.{index}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about over-long values
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def deflate_bomb(inflated_mib: int) -> bytes:
    """A Deflated Explicit VR Little Endian chest CR whose data set inflates to about
    ``inflated_mib`` MiB (zero pixels), built by streaming zlib so this process never holds it."""
    ds = pydicom.dcmread(testdata("RG1_UNCR.dcm"))
    side = int((inflated_mib * MIB // 2) ** 0.5)
    pixel_bytes = side * side * 2
    ds.Rows = ds.Columns = side
    del ds.PixelData
    sop_uid = pydicom.uid.UID(f"{UID}.9.{inflated_mib}")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    head = body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [deflate.compress(head)]
    zeros = bytes(MIB)
    left = pixel_bytes
    while left:
        step = min(left, MIB)
        parts.append(deflate.compress(zeros[:step]))
        left -= step
    parts.append(deflate.flush())
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + meta.getvalue() + b"".join(parts)


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def proc_read_bytes(pid: int) -> int:
    """Bytes ``pid`` has read by read()/recv() so far (``rchar`` of /proc/PID/io: sockets and
    files alike, so an upper bound on what it read from one client)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/PID/io")


class Server:
    """``radcheck serve --no-ui --migrate`` in its own process, settings at their defaults."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.data = root / "data"
        self.log = root / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
        env |= {
            "PYTHONPATH": str(ROOT),
            "RADCHECK_STORAGE__DATA_DIR": str(self.data),
            "RADCHECK_MODEL__BACKEND": "none",
        }
        self.env = env
        with self.log.open("wb") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--no-ui", "--migrate",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=root, stdout=handle, stderr=handle,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text(errors="replace")[-2000:])
            try:
                if httpx.get(f"{self.url}{API}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("radcheck serve did not answer /health in 180 s")
            time.sleep(0.2)
        created = subprocess.run(
            [sys.executable, "-m", "app.cli", "apikey", "create", "--role", "integration",
             "--name", "bench-hostile"],
            env=env, cwd=root, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        self.key = created.stdout.strip().splitlines()[-1].strip()
        self.headers = {"X-API-Key": self.key}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def post_files(self, *blobs: bytes, timeout: float = 120) -> httpx.Response:
        files = [("files", (f"f{i}.dcm", b, "application/dicom")) for i, b in enumerate(blobs)]
        return httpx.post(
            f"{self.url}{API}/instances", files=files, headers=self.headers, timeout=timeout
        )

    def files(self) -> list[Path]:
        return sorted(p for p in (self.data / "files").rglob("*") if p.is_file())

    def instance_rows(self, sop_uid: str) -> int:
        with sqlite3.connect(self.data / "radcheck.db", timeout=30) as con:
            row = con.execute(
                "SELECT count(*) FROM instances WHERE sop_instance_uid = ?", (sop_uid,)
            ).fetchone()
        return int(row[0])


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, round(time.monotonic() - started, 3)


# --- the items -------------------------------------------------------------------------------


def long_reports(s: Server) -> dict[str, Any]:
    url = f"{s.url}{API}/check-report"
    huge = ("FINDINGS: " + SENTENCE * (100_000 // len(SENTENCE) + 1))[:100_000]
    r, seconds = timed(lambda: httpx.post(url, json={"text": huge}, headers=s.headers, timeout=300))
    at_cap = "FINDINGS: " + SENTENCE * ((20_000 - 10) // len(SENTENCE))
    r2, seconds2 = timed(
        lambda: httpx.post(url, json={"text": at_cap}, headers=s.headers, timeout=300)
    )
    return {
        "100k": {"chars": len(huge), "status": r.status_code, "seconds": seconds},
        "at_cap": {"chars": len(at_cap), "status": r2.status_code, "seconds": seconds2},
    }


def bomb(s: Server) -> dict[str, Any]:
    blob = deflate_bomb(300)  # past the default 256 MiB RADCHECK_STORAGE__MAX_INFLATED_BYTES
    before = proc_memory(s.proc.pid)
    r, seconds = timed(lambda: s.post_files(blob))
    after = proc_memory(s.proc.pid)
    return {
        "file_kib": round(len(blob) / 1024, 1),
        "inflates_to_mib": 300,
        "status": r.status_code,
        "seconds": seconds,
        "names_setting": "RADCHECK_STORAGE__MAX_INFLATED_BYTES" in r.text,
        "rss_mib_before": round(before["VmRSS"] / 1024, 1),
        "rss_mib_after": round(after["VmRSS"] / 1024, 1),
        "hwm_mib_before": round(before["VmHWM"] / 1024, 1),
        "hwm_mib_after": round(after["VmHWM"] / 1024, 1),
        "rows": s.instance_rows(f"{UID}.9.300"),
    }


def unauthenticated(s: Server) -> dict[str, Any]:
    total = 200 * MIB
    boundary = "benchhostile"
    head = (
        f"POST {API}/instances HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {total}\r\n\r\n"
    ).encode()
    chunk = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n'
        "Content-Type: application/dicom\r\n\r\n"
    ).encode()
    chunk += b"\0" * (MIB - len(chunk))
    filler = b"\0" * MIB
    sent, answer = 0, b""
    read_before = proc_read_bytes(s.proc.pid)
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    try:
        sock.sendall(head)
        while sent < total and time.monotonic() - started < 120:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break  # the server answered (or closed): stop sending
            if not writable:
                continue
            try:
                sent += sock.send(chunk if sent == 0 else filler)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(30)
        try:
            while not answer.endswith(b"}") and len(answer) < 65536:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    finally:
        sock.close()
    seconds = round(time.monotonic() - started, 3)
    server_read = proc_read_bytes(s.proc.pid) - read_before
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    bad_json = httpx.post(
        f"{s.url}{API}/check-report",
        content=b'{"text": "unterminated',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    return {
        "upload_mib": 200,
        "status": status,
        "seconds": seconds,
        "client_body_bytes_sent_before_answer": sent,  # includes the kernel's socket buffers
        "server_bytes_read_meanwhile": server_read,  # all its reads, files included
        "malformed_json_no_key_status": bad_json.status_code,
    }


def surrogate(s: Server) -> dict[str, Any]:
    r = httpx.post(
        f"{s.url}{API}/check-report",
        content=b'{"text": "FINDINGS: effusion \\ud800 here."}',
        headers={**s.headers, "Content-Type": "application/json"},
        timeout=60,
    )
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return {"status": r.status_code, "request_id": bool(body.get("request_id"))}


def truncated_j2k(s: Server) -> dict[str, Any]:
    complete = testdata("RG1_J2KR.dcm").read_bytes()
    cut = s.post_files(complete[:2164])
    whole = s.post_files(complete)
    return {
        "cut_bytes": 2164,
        "complete_bytes": len(complete),
        "truncated_status": cut.status_code,
        "complete_status": whole.status_code,
    }


def parallel_conflicts(s: Server) -> dict[str, Any]:
    blobs = [dicom_bytes(60, InstanceNumber=i + 1) for i in range(10)]
    files_before = len(s.files())
    barrier = threading.Barrier(10)

    def send(blob: bytes) -> int:
        barrier.wait(timeout=60)
        return s.post_files(blob).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(send, blobs))
    digests = {hashlib.sha256(b).hexdigest() for b in blobs}
    left = [p for p in s.files() if p.name in digests]
    return {
        "statuses": sorted(statuses),
        "rows": s.instance_rows(f"{UID}.1.60"),
        "files_of_this_uid": len(left),
        "new_files": len(s.files()) - files_before,
    }


def long_name(s: Server) -> dict[str, Any]:
    r = s.post_files(dicom_bytes(70, PatientName="A" * 5009))
    return {"chars": 5009, "status": r.status_code, "rows": s.instance_rows(f"{UID}.1.70")}


def file_modes(s: Server) -> dict[str, Any]:
    return {
        p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in sorted(s.data.glob("radcheck.db*"))
    }


def model_bind(s: Server) -> dict[str, Any]:
    """Asks for 0.0.0.0 without a key: refused before it binds (a run past 120 s is killed)."""
    env = {k: v for k, v in s.env.items() if "API_KEY" not in k}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "model", "serve", "--model", "unused",
             "--host", "0.0.0.0", "--port", str(free_port())],  # noqa: S104 - must be refused
            env=env, cwd=s.root, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "note": "still running after 120 s (killed): not refused"}
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return {"exit_code": done.returncode, "message": last[:160]}


def slowloris(s: Server) -> dict[str, Any]:
    socks: list[socket.socket] = []
    try:
        for i in range(500):  # 50 from each of 10 addresses: under the per-peer bound of 64
            sock = socket.create_connection(
                ("127.0.0.1", s.port), timeout=30, source_address=(f"127.0.0.{10 + i % 10}", 0)
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)
            sock.sendall(PARTIAL)
            socks.append(sock)
        sent = time.monotonic()
        health = httpx.get(f"{s.url}{API}/health", timeout=30)
        health_seconds = round(time.monotonic() - sent, 3)
        open_ = {sock.fileno(): sock for sock in socks}
        answers: dict[int, bytes] = {fd: b"" for fd in open_}
        deadline = sent + 120
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_.values()), [], [], 1)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except (ConnectionResetError, TimeoutError):
                    data = b""
                if data:
                    answers[sock.fileno()] += data
                else:
                    open_.pop(sock.fileno())
        closed_after = round(time.monotonic() - sent, 2)
        statuses = sorted({a[9:12].decode() for a in answers.values()})
    finally:
        for sock in socks:
            sock.close()
    return {
        "connections": 500,
        "still_open_after_120_s": len(open_),
        "seconds_until_all_closed": closed_after,
        "answers": statuses,
        "health_status_meanwhile": health.status_code,
        "health_seconds_meanwhile": health_seconds,
        "security_headers": {h: h in health.headers for h in SECURITY_HEADERS},
    }


ITEMS: list[tuple[str, Callable[[Server], dict[str, Any]]]] = [
    ("1_long_report", long_reports),
    ("2_deflate_bomb", bomb),
    ("3_no_key", unauthenticated),
    ("4_lone_surrogate", surrogate),
    ("5_truncated_j2k", truncated_j2k),
    ("6_parallel_conflicts", parallel_conflicts),
    ("7_long_patient_name", long_name),
    ("8_file_modes", file_modes),
    ("9_model_bind", model_bind),
    ("10_half_sent_and_headers", slowloris),
]


def markdown(results: dict[str, Any]) -> str:
    """The measured numbers as the table in docs/hardening.md."""
    r = results["items"]

    def get(item: str, *path: str) -> Any:
        value: Any = r.get(item, {})
        for key in path:
            value = value.get(key, "?") if isinstance(value, dict) else "?"
        return value

    rows = [
        ("1 report of 100,000 characters", f"{get('1_long_report', '100k', 'status')}",
         f"{get('1_long_report', '100k', 'seconds')} s to the answer (was > 75 s of CPU)"),
        ("1 report at the 20,000 cap", f"{get('1_long_report', 'at_cap', 'status')}",
         f"{get('1_long_report', 'at_cap', 'seconds')} s"),
        (f"2 deflate bomb ({get('2_deflate_bomb', 'file_kib')} KiB, inflates to 300 MiB)",
         f"{get('2_deflate_bomb', 'status')}",
         f"RSS {get('2_deflate_bomb', 'rss_mib_before')} -> {get('2_deflate_bomb', 'rss_mib_after')}"
         f" MiB, peak {get('2_deflate_bomb', 'hwm_mib_before')} -> "
         f"{get('2_deflate_bomb', 'hwm_mib_after')} MiB; {get('2_deflate_bomb', 'rows')} rows"),
        ("3 200 MiB upload, no key", f"{get('3_no_key', 'status')}",
         f"answered after {get('3_no_key', 'seconds')} s; the client had sent "
         f"{get('3_no_key', 'client_body_bytes_sent_before_answer')} body bytes (into the "
         f"kernel's socket buffers), the server process read "
         f"{get('3_no_key', 'server_bytes_read_meanwhile')} bytes in all meanwhile"),
        ("3 malformed JSON, no key", f"{get('3_no_key', 'malformed_json_no_key_status')}", "-"),
        ("4 lone surrogate in a JSON field", f"{get('4_lone_surrogate', 'status')}",
         f"request id: {get('4_lone_surrogate', 'request_id')}"),
        ("5 JPEG 2000 cut to 2,164 bytes, then complete",
         f"{get('5_truncated_j2k', 'truncated_status')}, then "
         f"{get('5_truncated_j2k', 'complete_status')}", "-"),
        ("6 10 parallel uploads, one SOP Instance UID", f"{get('6_parallel_conflicts', 'statuses')}",
         f"{get('6_parallel_conflicts', 'rows')} row, "
         f"{get('6_parallel_conflicts', 'files_of_this_uid')} file on disk"),
        ("7 patient name of 5,009 characters", f"{get('7_long_patient_name', 'status')}",
         f"{get('7_long_patient_name', 'rows')} rows"),
        ("8 SQLite file modes", "-", ", ".join(f"{k} {v}" for k, v in r.get("8_file_modes", {}).items())),
        ("9 model server on 0.0.0.0 without a key", f"exit {get('9_model_bind', 'exit_code')}", "-"),
        ("10 500 half-sent connections (header timeout 10 s)",
         f"{get('10_half_sent_and_headers', 'answers')}",
         f"all closed after {get('10_half_sent_and_headers', 'seconds_until_all_closed')} s; "
         f"/health meanwhile {get('10_half_sent_and_headers', 'health_status_meanwhile')} in "
         f"{get('10_half_sent_and_headers', 'health_seconds_meanwhile')} s"),
        ("10 security headers on a response", "-",
         ", ".join(k for k, v in get("10_half_sent_and_headers", "security_headers").items() if v)
         if isinstance(get("10_half_sent_and_headers", "security_headers"), dict) else "?"),
    ]  # fmt: skip
    lines = ["| attack | answer | measured |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    skipped = [f"{k}: {v['skipped']}" for k, v in r.items() if "skipped" in v]
    if skipped:
        lines.append("\nSkipped: " + "; ".join(skipped))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hostile.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "items": {},
    }
    with tempfile.TemporaryDirectory(prefix="radcheck-hostile-") as tmp:
        server = Server(Path(tmp))
        try:
            for name, item in ITEMS:
                started = time.monotonic()
                try:
                    results["items"][name] = item(server)
                except Exception as exc:  # noqa: BLE001 - recorded, the other items still run
                    results["items"][name] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"{name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
            results["server_alive_at_end"] = server.proc.poll() is None
        finally:
            server.stop()
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nload average {results['loadavg_start']} -> {results['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
