"""Helpers for the DICOMweb / PACS tests: the app under uvicorn on a free loopback port, test files,
and the C-STORE listener (``radcheck dicom listen``) as its own process."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import uvicorn
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app.api import create_app
from app.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(settings: Settings, *, run_worker: bool = False) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, run_worker=run_worker),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, name="dicomweb-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def dicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom-data has no {name}"
    return Path(str(path))


def read(name: str) -> Dataset:
    return pydicom.dcmread(dicom_file(name))


def copy_with_new_uids(
    ds: Dataset, *, study_uid: str | None = None, accession: str | None = None
) -> Dataset:
    """A copy of ``ds`` that is a new instance (new SOP and series UIDs; study as given)."""
    out = copy.deepcopy(ds)
    sop = generate_uid()
    out.SOPInstanceUID = sop
    out.file_meta.MediaStorageSOPInstanceUID = sop
    out.SeriesInstanceUID = generate_uid()
    if study_uid is not None:
        out.StudyInstanceUID = study_uid
    if accession is not None:
        out.AccessionNumber = accession
    return out


# The C-STORE listener (`radcheck dicom listen`) as its own process, fed by dcmtk.
REPO = Path(__file__).resolve().parents[2]
AET = "RADCHECK"
SENDER = "STORESCU"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Listener:
    def __init__(
        self,
        settings: Settings,
        drain_s: float = 30.0,
        allowed: tuple[str, ...] = (SENDER, "PYNETDICOM"),
    ) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RADCHECK_STORAGE__DATA_DIR": str(settings.storage.data_dir),
            "RADCHECK_DATABASE__URL": settings.database_url,
            "RADCHECK_LISTENER__ALLOWED_CALLING_AES": json.dumps(list(allowed)),
            "RADCHECK_LISTENER__MIN_FREE_BYTES": "0",
            "RADCHECK_LISTENER__DRAIN_S": str(drain_s),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "dicom",
                "listen",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(self.echo_ok, 60, "the listener to answer C-ECHO")

    def echo_ok(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"listener exited: {self.process.stderr.read()}")  # type: ignore[union-attr]
        result = subprocess.run(
            ["echoscu", "-aet", SENDER, "-aec", AET, "127.0.0.1", str(self.port)],
            capture_output=True,
            timeout=30,
        )
        return result.returncode == 0

    def storescu(self, *args: str, aet: str = SENDER) -> subprocess.CompletedProcess[str]:
        options = [a for a in args if a.startswith(("-", "+"))]
        files = [a for a in args if not a.startswith(("-", "+"))]
        return subprocess.run(
            [
                "storescu",
                "-v",
                "-aet",
                aet,
                "-aec",
                AET,
                *options,
                "127.0.0.1",
                str(self.port),
                *files,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _out, err = self.process.communicate(timeout=60)
        return err
