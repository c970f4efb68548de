"""``radcheck ui``: the Streamlit dashboard, as its own process (also started by ``radcheck serve``)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from app.settings import Settings

__all__ = ["dashboard_command", "default_api_url", "port_free", "start_dashboard"]

logger = logging.getLogger(__name__)

DASHBOARD = Path(__file__).resolve().parents[1] / "ui" / "dashboard.py"


def default_api_url(
    settings: Settings, api_host: str | None = None, api_port: int | None = None
) -> str:
    if settings.ui.api_url:
        return settings.ui.api_url
    host = api_host or settings.api.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind-all address is reached via loopback
        host = "127.0.0.1"
    return f"http://{host}:{api_port or settings.api.port}/api/v1"


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def dashboard_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD),
        "--server.headless",
        "true",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--client.showErrorDetails",
        "none",
        "--server.fileWatcherType",
        "none",
        "--global.developmentMode",
        "false",
    ]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, however it dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_dashboard(host: str, port: int, api_url: str) -> subprocess.Popen[bytes]:
    """The dashboard as a child process that stops when its parent stops (even on SIGKILL)."""
    return start_child(dashboard_command(host, port), {"RADCHECK_UI__API_URL": api_url})


def start_child(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child process that stops when its parent stops (even on SIGKILL)."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, preexec_fn=preexec)
