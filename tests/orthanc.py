"""Throw-away Orthanc PACS instances on free loopback ports, for tests and benchmarks.

Debian's ``orthanc`` + ``orthanc-dicomweb`` packages (see specs/pacs.md). Each instance has its own
storage and index in a temp folder, HTTP and DICOM ports on 127.0.0.1, the DICOMweb plugin under
``/dicom-web/``, and optionally basic-auth users, known DICOM modalities and Lua scripts. Teardown is a
SIGKILL (Orthanc takes seconds to stop on SIGTERM; nothing it holds is kept).

Use the ``orthanc_factory`` fixture (tests/conftest.py) or ``OrthancServer`` directly in benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "DICOMWEB_PLUGIN",
    "ORTHANC_BINARY",
    "OrthancServer",
    "free_port",
    "orthanc_missing",
]

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here, or None when it can."""
    if not Path(ORTHANC_BINARY).exists():
        return "Orthanc is not installed (apt-get install -y orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.exists():
        return (
            f"the DICOMweb plugin is missing ({DICOMWEB_PLUGIN}; apt-get install orthanc-dicomweb)"
        )
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OrthancServer:
    """One Orthanc process. ``start()`` waits until its REST API answers."""

    workdir: Path
    aet: str = "ORTHANC"
    users: dict[str, str] = field(default_factory=dict)
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    lua_scripts: list[Path] = field(default_factory=list)
    stable_age_s: int = 60
    extra: dict[str, Any] = field(default_factory=dict)
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str] | None:
        if not self.users:
            return None
        user, password = next(iter(self.users.items()))
        return user, password

    def client(self, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client on the REST API (with the first user's credentials, if any)."""
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=timeout)

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": dict(self.users),
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
            "DicomModalities": {name: list(v) for name, v in self.modalities.items()},
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "StableAge": self.stable_age_s,
            "LuaScripts": [str(p) for p in self.lua_scripts],
            "HttpTimeout": 60,
            "StorageCompression": False,
            "ConcurrentJobs": 2,
        }
        cfg.update(self.extra)
        return cfg

    def start(self, timeout_s: float = 60.0) -> OrthancServer:
        problem = orthanc_missing()
        if problem is not None:
            raise RuntimeError(problem)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log").mkdir(exist_ok=True)
        for attempt in range(3):
            self.http_port = free_port()
            self.dicom_port = free_port()
            config_path = self.workdir / "orthanc.json"
            config_path.write_text(json.dumps(self.config(), indent=2))
            self.process = subprocess.Popen(
                [ORTHANC_BINARY, f"--logdir={self.workdir / 'log'}", str(config_path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_ready(timeout_s):
                return self
            self.stop()
            if attempt == 2:
                break
        logs = "\n".join(p.read_text()[-2000:] for p in (self.workdir / "log").glob("*.log*"))
        raise RuntimeError(f"Orthanc did not start within {timeout_s} s; log tail:\n{logs}")

    def _wait_ready(self, timeout_s: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(auth=self.auth, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False  # e.g. a port taken between free_port() and bind
                try:
                    if http.get(f"{self.url}/system").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Small conveniences over the REST API.

    def upload(self, data: bytes) -> dict[str, Any]:
        with self.client() as http:
            response = http.post("/instances", content=data)
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def studies(self) -> list[str]:
        with self.client() as http:
            response = http.get("/studies")
            response.raise_for_status()
            ids: list[str] = response.json()
            return ids

    def instance_count(self) -> int:
        with self.client() as http:
            stats = http.get("/statistics").json()
            return int(stats["CountInstances"])
