"""PHI never reaches a log line, proven end to end at DEBUG level.

Real DICOM files from pydicom-data are rewritten with distinctive patient names, IDs, birth dates
and accession numbers; reports carry distinctive sentences. They go through the real processes
(`radcheck serve`, `radcheck worker` with the openai backend, `radcheck model serve` with the tiny
checkpoint), including checks, reviews, reads and error paths; then every line any of them wrote
(stdout and stderr, DEBUG included) is searched for those values and for the API keys. The tiny
model stands in for LLaVA-Rad weights (meaningless output, same code path).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.settings import Settings
from tests.app.conftest import TINY_MODEL_ID
from tests.medvlm.test_runtime_helpers import tiny_checkpoint

__all__ = ["tiny_checkpoint"]

REPO = Path(__file__).resolve().parents[2]
API = "/api/v1"
MODEL_KEY = "phi-probe-model-key-" + "k" * 24

PATIENTS = [
    {
        "file": "RG1_UNCR.dcm",
        "name": "Quixotlewski^Zebulonia^Marisol",
        "id": "PHIPID483920",
        "birth": "19230417",
        "accession": "ACCPHI771245",
    },
    {
        "file": "RG1_UNCR.dcm",
        "name": "Vantreblov^Ophelius",
        "id": "PHIPID902117",
        "birth": "19370911",
        "accession": "ACCPHI330586",
    },
    {  # arrives by C-STORE into `radcheck dicom listen`; its report by HL7 into `radcheck hl7 listen`
        "file": "RG1_UNCR.dcm",
        "name": "Dromwhistle^Perpetua",
        "id": "PHIPID615204",
        "birth": "19410102",
        "accession": "ACCPHI448812",
    },
]
BY_UPLOAD = PATIENTS[:2]
BY_LISTENER = PATIENTS[2]
SENTENCES = [
    "There is a small right pleural effusion adjacent to the Blorvington catheter.",
    "Small left pleural effusion, as discussed with Dr Sprinkelthorpe.",
    "Indication: fall at Wexmoorhaven station.",
    "Reviewed with the Quibbleston protocol.",
    "Small right pleural effusion near the Thistlewaite drain.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def probes(keys: list[str]) -> list[str]:
    """Every value that must never be logged, in the forms it could take."""
    out: list[str] = []
    for p in PATIENTS:
        out += [p["name"], *p["name"].split("^"), p["id"], p["birth"], p["accession"]]
        out.append(f"{p['birth'][:4]}-{p['birth'][4:6]}-{p['birth'][6:]}")
    out += SENTENCES
    out += [word for s in SENTENCES for word in re.findall(r"[A-Z][a-z]{8,}", s)]
    return out + keys + [MODEL_KEY]


class Processes:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], IO[Any]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        handle = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args], env=env, stdout=handle, stderr=handle
        )
        self.procs.append((proc, handle))
        return proc

    def stop(self) -> None:
        for proc, handle in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            handle.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    (tmp_path / "logs").mkdir()
    running = Processes(tmp_path / "logs")
    try:
        yield running
    finally:
        running.stop()


def oru_for(patient: dict[str, str]) -> bytes:
    """An ORU^R01 carrying the patient's identifiers and a distinctive report, for the HL7 door."""
    segments = [
        "MSH|^~\\&|RIS|PHI_HOSP|RADCHECK|PHI_HOSP|20261203100000||ORU^R01^ORU_R01|PHI-0001|P|"
        "2.5.1|||AL|NE||UNICODE UTF-8",
        f"PID|1||{patient['id']}^^^PHI_HOSP^MR||{patient['name']}||{patient['birth']}|F",
        f"ORC|RE|PL-PHI|{patient['accession']}||CM",
        f"OBR|1|PL-PHI|{patient['accession']}|71046^XR CHEST 2 VIEWS^CPT4|||20261203093000"
        "|||||||||||||||20261203100000||CR|F",
        f"OBX|1|FT|18785-6^Radiology Reason for study^LN||{SENTENCES[2]}||||||F",
        f"OBX|2|FT|18782-3^Radiology Study observation^LN||The heart size is normal.\\.br\\"
        f"{SENTENCES[0]}||||||F",
        f"OBX|3|FT|19005-8^Radiology Impression^LN||{SENTENCES[4]}||||||F",
    ]
    return ("\r".join(segments) + "\r").encode()


def run_cli(env: dict[str, str], *args: str) -> str:
    """A short CLI command (its output is searched like the logs)."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    CLI_OUTPUT.append(done.stdout + done.stderr)
    return done.stdout


CLI_OUTPUT: list[str] = []


def phi_files(tmp_path: Path) -> list[Path]:
    out = []
    for i, patient in enumerate(PATIENTS):
        ds = pydicom.dcmread(get_testdata_file(patient["file"], download=False))
        ds.PatientName = patient["name"]
        ds.PatientID = patient["id"]
        ds.PatientBirthDate = patient["birth"]
        ds.AccessionNumber = patient["accession"]
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.771.{i + 1}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.10.771.{i + 1}.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.771.{i + 1}.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = tmp_path / f"phi{i}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)  # three real processes and a model load on a busy 2-core machine
def test_no_phi_or_key_in_any_log_line_at_debug(
    sqlite_settings: Settings, procs: Processes, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    settings = sqlite_settings
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    env = base_env | {
        "PYTHONPATH": str(REPO),
        "RADCHECK_LOG_LEVEL": "DEBUG",
        "RADCHECK_STORAGE__DATA_DIR": str(settings.storage.data_dir),
        "RADCHECK_DATABASE__URL": settings.database_url,
        "RADCHECK_INGEST__QUIET_PERIOD_S": "0.05",
        "RADCHECK_WORKER__POLL_INTERVAL_S": "0.1",
    }
    keys = {}
    for role in ("integration", "radiologist"):
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "apikey", "create", "--role", role, "--name", role],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        keys[role] = done.stdout.strip()

    model_port, api_port, dicom_port, hl7_port = free_port(), free_port(), free_port(), free_port()
    procs.start(
        "dicom-listener",
        ["dicom", "listen", "--host", "127.0.0.1", "--port", str(dicom_port), "--ae-title", "RADCHECK"],
        env | {"RADCHECK_LISTENER__ALLOWED_CALLING_AES": '["PHITEST"]'},
    )  # fmt: skip
    procs.start(
        "hl7-listener", ["hl7", "listen", "--host", "127.0.0.1", "--port", str(hl7_port)], env
    )
    procs.start(
        "model-server",
        ["model", "serve", "--model", str(tiny_checkpoint), "--host", "127.0.0.1", "--port", str(model_port),
         "--served-model-name", TINY_MODEL_ID, "--device", "cpu", "--log-level", "DEBUG"],
        env | {"RADCHECK_MODEL_SERVER_API_KEY": MODEL_KEY},
    )  # fmt: skip
    procs.start(
        "worker",
        ["worker"],
        env
        | {
            "RADCHECK_MODEL__BACKEND": "openai",
            "RADCHECK_MODEL__OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
            "RADCHECK_MODEL__OPENAI_MODEL": TINY_MODEL_ID,
            "RADCHECK_MODEL__OPENAI_API_KEY": MODEL_KEY,
        },
    )
    api = procs.start(
        "api",
        ["serve", "--no-worker", "--host", "127.0.0.1", "--port", str(api_port)],
        env,
    )
    url = f"http://127.0.0.1:{api_port}{API}"

    def up(target: str) -> Callable[[], bool]:
        def check() -> bool:
            assert api.poll() is None, "radcheck serve exited"
            try:
                return httpx.get(target, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        return check

    wait_until(up(f"{url}/health"), 120, "the API")
    wait_until(up(f"http://127.0.0.1:{model_port}/health"), 240, "the model server")
    integ = {"X-API-Key": keys["integration"]}
    rad = {"Authorization": f"Bearer {keys['radiologist']}"}
    with httpx.Client(base_url=url, timeout=60) as client:
        paths = phi_files(tmp_path)
        files = [
            ("files", (p.name, p.read_bytes(), "application/dicom"))
            for p in paths[: len(BY_UPLOAD)]
        ]
        files.append(("files", ("not-dicom.dcm", SENTENCES[0].encode(), "application/dicom")))
        assert client.post("/instances", files=files, headers=integ).status_code == 202  # 1 refused
        assert client.post("/instances", files=files[:1], headers=integ).status_code in (200, 201)
        jobs = []
        for i, patient in enumerate(BY_UPLOAD):
            uid = f"1.2.826.0.1.3680043.10.771.{i + 1}"
            report = {
                "accession_number": patient["accession"],
                "indication": SENTENCES[2],
                "findings": f"The heart size is normal. {SENTENCES[0]} No pneumothorax.",
                "impression": SENTENCES[1],
            }
            response = client.post(f"/studies/{uid}/reports", json=report, headers=integ)
            assert response.status_code == 201, response.text
            if i == 0:  # one check through the model (CPU generation is slow on a busy machine)
                jobs.append(client.post(f"/studies/{uid}/checks", headers=integ).json()["id"])

        # The third patient by the other doors: C-STORE (an unknown calling AE first: refused),
        # then the report by HL7 over MLLP.
        def storescu(calling: str) -> int:
            return subprocess.run(
                ["storescu", "-aet", calling, "-aec", "RADCHECK", "127.0.0.1", str(dicom_port),
                 str(paths[2])],
                capture_output=True, timeout=120, check=False,
            ).returncode  # fmt: skip

        wait_until(lambda: storescu("PHITEST") == 0, 120, "the C-STORE listener")
        assert storescu("NOTALLOWED") != 0
        oru = tmp_path / "phi.hl7"
        oru.write_bytes(oru_for(BY_LISTENER))
        wait_until(
            lambda: "MSA|AA" in run_cli(env, "hl7", "send", "--port", str(hl7_port), str(oru)),
            120,
            "the HL7 listener to accept the report",
        )

        def hl7_report_attached() -> bool:
            body = client.get("/studies/1.2.826.0.1.3680043.10.771.3", headers=rad)
            return body.status_code == 200 and bool(body.json().get("reports"))

        wait_until(hl7_report_attached, 300, "the HL7 report to be matched to its study")
        # error paths that echo input: a bad date, an unknown study, an invalid body
        bad_query = {"accession_number": PATIENTS[0]["accession"], "date_from": PATIENTS[0]["name"]}
        assert client.get("/studies", params=bad_query, headers=integ).status_code == 422
        missing = client.post(
            "/studies/9.9.9/reports", json={"findings": SENTENCES[3]}, headers=integ
        )
        assert missing.status_code == 404
        junk = {"findings": 7, "impression": SENTENCES[3]}
        assert client.post("/check-report", json=junk, headers=integ).status_code == 422
        assert (
            client.post("/check-report", json={"findings": SENTENCES[0]}, headers=integ).status_code
            == 200
        )

        def finished() -> bool:
            statuses = [client.get(f"/checks/{j}", headers=integ).json()["status"] for j in jobs]
            return all(s in ("succeeded", "failed") for s in statuses)

        wait_until(finished, 900, "the check")
        for job_id in jobs:
            job = client.get(f"/checks/{job_id}", headers=rad).json()
            assert job["status"] == "succeeded", job.get("error")
            assert job["provenance"]["checker"]["runtime"]["backend"] == "openai"
            if job["flags"]:
                review = {"decision": "dismissed", "comment": SENTENCES[3]}
                flag = job["flags"][0]["id"]
                assert (
                    client.post(f"/flags/{flag}/reviews", json=review, headers=rad).status_code
                    == 201
                )
        listing = client.get(
            "/studies", params={"accession_number": PATIENTS[1]["accession"]}, headers=rad
        )
        assert listing.json()["total"] == 1
        for i in range(len(PATIENTS)):
            assert (
                client.get(f"/studies/1.2.826.0.1.3680043.10.771.{i + 1}", headers=rad).status_code
                == 200
            )
    procs.stop()

    lines: list[tuple[str, str]] = []
    for log in sorted(procs.logs.glob("*.log")):
        lines += [(log.stem, line) for line in log.read_text(errors="replace").splitlines()]
    by_process = {
        name: sum(1 for n, _ in lines if n == name)
        for name in ("api", "worker", "model-server", "dicom-listener", "hl7-listener")
    }
    assert all(by_process.values()), f"a process wrote no log at all: {by_process}"
    lines += [("cli", line) for out in CLI_OUTPUT for line in out.splitlines()]
    assert any("DEBUG" in line for _, line in lines), "DEBUG logging was not on"
    hits = [
        f"{name}: {probe!r} in {line[:160]!r}"
        for name, line in lines
        for probe in probes(list(keys.values()))
        if probe.lower() in line.lower()
    ]
    assert hits == [], f"{len(hits)} PHI/key hits in {len(lines)} log lines:\n" + "\n".join(
        hits[:20]
    )
