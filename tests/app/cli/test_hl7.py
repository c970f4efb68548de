"""`radcheck hl7 listen / send / import` as a user runs them (real subprocesses, loopback only).

The listen test is the issue's "done when": the demo study, the documented sample ORU^R01 sent with
python-hl7's `mllp_send`, the report version and its check in the API; and the listener's whole log
grepped for the identifiers and report text of every message sent (zero hits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient

from app.api import create_app
from app.cli.hl7 import split_messages
from app.settings import Settings
from tests.app.conftest import auth
from tests.app.hl7_support import (
    BIRTH_DATE,
    FINDINGS_LINE,
    IMPRESSION_LINE,
    PATIENT_ID,
    PATIENT_ID_2,
    SAMPLE,
    Client,
    oru_v23,
    oru_v251,
)

DEMO_UID = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
MLLP_SEND = Path(sys.executable).parent / "mllp_send"


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")}
    return {
        **env,
        "RADCHECK_STORAGE__DATA_DIR": str(settings.storage.data_dir),
        "RADCHECK_DATABASE__URL": settings.database_url,
        "RADCHECK_INGEST__QUIET_PERIOD_S": "0.1",
        **extra,
    }


def radcheck(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@contextmanager
def listen(env: dict[str, str]) -> Iterator[tuple[int, list[str]]]:
    """`radcheck hl7 listen --port 0`; yields the port and the (growing) list of log lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "hl7", "listen", "--port", "0"],
        env={**env, "RADCHECK_LOG_LEVEL": "DEBUG"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "hl7 listener on" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert ready.wait(120), "the listener did not start"
        started = next((x for x in lines if "hl7 listener on" in x), None)
        assert started is not None, "".join(lines)
        port = int(started.split("hl7 listener on 127.0.0.1:")[1].split()[0])
        yield port, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)


def test_demo_sample_through_the_listener_then_checked_and_no_phi_logged(
    settings: Settings, keys: dict[str, str], tmp_path: Path
) -> None:
    env = env_for(settings)
    demo = radcheck(env, "demo")
    assert demo.returncode == 0, demo.stderr
    vendor = tmp_path / "vendor.hl7"
    vendor.write_bytes(
        oru_v251(control_id="V-1", accession="exam Number", status="C", study_uid=DEMO_UID).replace(
            b"MRN48213977", b"9RG1"
        )
        + oru_v23(control_id="V-2", accession="exam Number").replace(b"|P|2.3", b"|P|2.1")
    )
    with listen(env) as (port, lines):
        sent = subprocess.run(
            [str(MLLP_SEND), "--loose", "--file", str(SAMPLE), "--port", str(port), "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert sent.returncode == 0, sent.stderr
        assert "MSA|AA|DEMO-0001|Stored as report version 2" in sent.stdout
        ours = radcheck(env, "hl7", "send", "--port", str(port), str(vendor))
        assert ours.returncode == 1  # one of the two was rejected
        msa = ours.stdout.splitlines()
        assert msa[0].startswith("MSA|AA|V-1|Stored as report version 3")
        assert msa[1].startswith("MSA|AR|V-2|HL7 version '2.1'")
        bad = Client(("127.0.0.1", port))
        bad.send_raw(b"MSH|not framed " + PATIENT_ID.encode())
        assert bad.closed_by_peer()
        bad.close()
    worker = radcheck(env, "worker", "--once")
    assert worker.returncode == 0, worker.stderr
    log = "".join(lines)
    assert "control_id=DEMO-0001 -> AA (stored)" in log
    assert "control_id=V-2 -> AR (rejected)" in log
    assert "expected the MLLP start byte 0x0B" in log
    for secret in (
        "9RG1",
        "CompressedSamples",
        "exam Number",
        "small right pleural effusion",
        "Cough and fever",
        PATIENT_ID,
        PATIENT_ID_2,
        "QUINTILLA",
        BIRTH_DATE,
        FINDINGS_LINE,
        IMPRESSION_LINE,
    ):
        assert secret.lower() not in log.lower(), secret
    with TestClient(create_app(settings, run_worker=False)) as client:
        study = client.get(f"/api/v1/studies/{DEMO_UID}", headers=auth(keys["radiologist"]))
    assert study.status_code == 200
    body = study.json()
    assert [(r["version"], r["result_status"]) for r in body["reports"]] == [
        (1, None),
        (2, "F"),
        (3, "C"),
    ]
    assert body["reports"][1]["impression"] == "Small left pleural effusion. No pneumothorax."
    checks = body["checks"]
    assert len(checks) == 3 and checks[0]["status"] == "succeeded"
    # The worker ran one more check (the oldest queued); the other is still queued.
    assert sorted(c["status"] for c in checks[1:]) == ["queued", "succeeded"]


def test_import_files_and_folders(sqlite_settings: Settings, tmp_path: Path) -> None:
    export = tmp_path / "export"
    (export / "day1").mkdir(parents=True)
    two = oru_v251(control_id="I-1", accession="IMP-1") + oru_v23(
        control_id="I-2", accession="IMP-2"
    )
    (export / "day1" / "two.hl7").write_bytes(two.replace(b"\r", b"\r\n"))
    (export / "framed.mllp").write_bytes(
        b"\x0b" + oru_v251(control_id="I-3", accession="IMP-3") + b"\x1c\x0d"
    )
    (export / "bad.hl7").write_bytes(
        oru_v251(control_id="I-4", accession="IMP-4").replace(b"ORU^R01", b"ADT^A08")
    )
    (export / ".hidden").write_bytes(b"ignored")
    env = env_for(sqlite_settings)
    done = radcheck(env, "hl7", "import", str(export))
    assert done.returncode == 1, done.stderr  # the ADT message is rejected
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["control_id"], r["ack"], r["outcome"]) for r in rows] == [
        ("I-4", "AR", "rejected"),
        ("I-1", "AA", "waiting"),
        ("I-2", "AA", "waiting"),
        ("I-3", "AA", "waiting"),
    ]
    again = radcheck(env, "hl7", "import", str(export / "day1" / "two.hl7"))
    assert again.returncode == 0
    assert [json.loads(x)["outcome"] for x in again.stdout.splitlines()] == [
        "duplicate",
        "duplicate",
    ]
    missing = radcheck(env, "hl7", "import", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_split_messages_handles_framing_and_batches() -> None:
    one, two = oru_v251(control_id="S-1", accession="A"), oru_v23(control_id="S-2", accession="B")
    batch = b"FHS|^~\\&\rBHS|^~\\&\r" + one + two + b"BTS|2\rFTS|1\r"
    assert split_messages(batch) == [one, two]
    assert split_messages(b"\x0b" + one + b"\x1c\x0d\n\x0b" + two + b"\x1c\x0d") == [one, two]
    assert split_messages(one.replace(b"\r", b"\n")) == [one]
    assert shutil.which(str(MLLP_SEND)) is not None  # the documented sender is installed
