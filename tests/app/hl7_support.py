"""Helpers for the HL7 tests: vendor-shaped ORU^R01 messages, DICOM with a chosen accession, an
in-process listener on loopback, and a raw MLLP client."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from app.db.models import CheckJob, JobStatus
from app.db.session import Database
from app.hl7 import Hl7Listener, ListenerConfig
from app.services.factory import build_pipeline
from app.services.ingest import ingest_instance
from app.services.report_intake import Intake, IntakeConfig
from app.services.storage import ContentStore
from app.settings import Settings
from app.worker.runner import Worker
from tests.app.conftest import limits_of

VT, FS, CR = b"\x0b", b"\x1c", b"\r"

# Made-up identities: the PHI test greps the logs for every one of these strings.
PATIENT_NAME = "ZYXWVUTS^QUINTILLA^M"
PATIENT_ID = "MRN48213977"
PATIENT_ID_2 = "SSN555123987"
BIRTH_DATE = "19480317"
FINDINGS_LINE = "Moderate right pleural effusion layering posteriorly"
IMPRESSION_LINE = "Right effusion with adjacent atelectasis"


def new_accession() -> str:
    return f"ACC{uuid.uuid4().hex[:10].upper()}"


def dicom_bytes(accession: str, patient_id: str = PATIENT_ID) -> tuple[bytes, str]:
    """A real chest CR (pydicom-data RG1) with fresh UIDs, the given accession and patient ID."""
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm", download=False))
    ds.StudyInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.SeriesInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.SOPInstanceUID = f"2.25.{uuid.uuid4().int}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.AccessionNumber = accession
    ds.PatientID = patient_id
    ds.PatientName = PATIENT_NAME.replace("^M", "")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), str(ds.StudyInstanceUID)


def oru_v251(
    *,
    control_id: str,
    accession: str,
    status: str = "F",
    study_uid: str | None = None,
    patient_id: str = PATIENT_ID,
    impression: str = IMPRESSION_LINE + ".",
) -> bytes:
    """Vendor shape A (v2.5.1): LOINC-coded FT sections with escapes, repeating PID-3, ORC, NTE,
    a ZDS with the study UID and another Z-segment."""
    segments = [
        f"MSH|^~\\&|PowerScribe|RADIOLOGY^1.2.3^ISO|RADCHECK|HOSP|20261202101500+0100||"
        f"ORU^R01^ORU_R01|{control_id}|P|2.5.1|||AL|NE||UNICODE UTF-8",
        f"PID|1||{patient_id}^^^HOSP^MR~{PATIENT_ID_2}^^^SSA^SS||{PATIENT_NAME}||{BIRTH_DATE}|F",
        "PV1|1|O|RAD^^^HOSP",
        f"ORC|RE|PL{control_id}|{accession}||CM",
        f"OBR|1|PL{control_id}|{accession}|71046^XR CHEST 2V^CPT4|||20261202100000|||||||||||||"
        f"||20261202101500||CR|{status}",
        "NTE|1||Dictated with voice recognition",
        "OBX|1|FT|18785-6^Radiology Reason for study^LN||Dyspnoea \\T\\ cough.||||||" + status,
        "OBX|2|FT|18782-3^Radiology Study observation^LN||Heart size is normal.\\.br\\"
        f"{FINDINGS_LINE}.\\.br\\Ratio 0.5\\F\\0.6 cm\\S\\2 (sic) \\X41\\ line.||||||{status}",
        f"OBX|3|FT|19005-8^Radiology Impression^LN||{impression}||||||{status}",
    ]
    if study_uid is not None:
        segments.append(f"ZDS|{study_uid}^RIS^Application^DICOM")
    segments.append("ZPI|1|internal-routing-token")
    return ("\r".join(segments) + "\r").encode()


def oru_v23(
    *,
    control_id: str,
    accession: str,
    status: str = "F",
    patient_id: str = PATIENT_ID,
    lines: list[str] | None = None,
) -> bytes:
    """Vendor shape B (v2.3, GE/IDX style): one TX OBX per line, OBX-3 '&GDT', labelled headings
    in the text, result status only in OBX-11, accession in OBR-3, a Z-segment."""
    lines = lines or [
        "EXAM: XR CHEST PA AND LATERAL",
        "FINDINGS:",
        "The heart size is normal.",
        f"{FINDINGS_LINE}.",
        "IMPRESSION:",
        f"{IMPRESSION_LINE}.",
    ]
    segments = [
        f"MSH|^~\\&|IDXRAD|HOSP|RADCHECK|HOSP|20261202101500||ORU^R01|{control_id}|P|2.3",
        f"PID|1|{PATIENT_ID_2}|{patient_id}~ALT778||{PATIENT_NAME}||{BIRTH_DATE}|F",
        f"OBR|1||{accession}|CXR2V^CHEST 2 VIEWS^L",
    ]
    segments += [
        f"OBX|{i}|TX|&GDT^Report text||{line}||||||{status}" for i, line in enumerate(lines, 1)
    ]
    segments.append("ZRS|1|signed")
    return ("\r".join(segments) + "\r").encode()


class Client:
    """A raw MLLP client over loopback (sends frames or arbitrary bytes, reads ACK frames)."""

    def __init__(self, address: tuple[str, int], timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: bytes) -> str:
        self.send_raw(VT + message + FS + CR)
        return self.read_ack()

    def read_ack(self) -> str:
        while FS + CR not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by the listener (buffer {self.buf!r})")
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(FS + CR)
        assert frame.startswith(VT), frame
        return frame[1:].decode()

    def closed_by_peer(self) -> bool:
        """True once the listener has closed the connection (waits up to the socket timeout)."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def msa(ack: str) -> list[str]:
    seg = next(s for s in ack.split("\r") if s.startswith("MSA"))
    return seg.split("|")


@contextmanager
def running_listener(
    settings: Settings, **overrides: object
) -> Iterator[tuple[tuple[str, int], Database]]:
    """The real listener on 127.0.0.1 (free port) in a background event loop."""
    db = Database(settings.database_url)
    intake = IntakeConfig(accession_field=str(overrides.pop("accession_field", "OBR-3")))
    config = ListenerConfig(host="127.0.0.1", port=0, **overrides)  # type: ignore[arg-type]
    listener = Hl7Listener(Intake(db, intake, source="mllp"), config)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(listener.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    assert listener.address is not None
    try:
        yield listener.address, db
    finally:
        asyncio.run_coroutine_threadsafe(listener.close(grace_s=10), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        db.dispose()


def ingest(settings: Settings, data: bytes) -> None:
    db = Database(settings.database_url)
    with db.session() as session:
        ingest_instance(
            session,
            ContentStore(settings.files_dir),
            data,
            actor="test",
            limits=limits_of(settings),
        )
    db.dispose()


def make_worker(settings: Settings, db: Database) -> Worker:
    return Worker(
        db,
        lambda: build_pipeline(settings),
        files_dir=settings.files_dir,
        lease_s=settings.worker.lease_s,
        poll_interval_s=0.05,
        quiet_period_s=settings.ingest.quiet_period_s,
        worker_id="test-worker",
    )


def run_worker_until(worker: Worker, done: Callable[[], bool], timeout: float = 120.0) -> None:
    """Run the worker's loop body until ``done()`` (a condition, never a fixed sleep count)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the worker did not reach the expected state"
        if not worker.run_once():
            time.sleep(0.05)


def jobs_of(db: Database) -> list[CheckJob]:
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    with db.session() as session:
        query = select(CheckJob).options(selectinload(CheckJob.report)).order_by(CheckJob.id)
        return list(session.scalars(query).all())


def all_succeeded(db: Database, count: int) -> Callable[[], bool]:
    def check() -> bool:
        jobs = jobs_of(db)
        return len(jobs) >= count and all(j.status == JobStatus.SUCCEEDED for j in jobs)

    return check


SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "oru_r01_demo.hl7"
