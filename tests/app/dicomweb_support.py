"""Helpers for the DICOMweb / PACS tests: the app under uvicorn on a free loopback port, test files."""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
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
