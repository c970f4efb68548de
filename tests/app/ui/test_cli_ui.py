"""`radcheck user ...`, `radcheck ui`, and `radcheck serve` starting (and stopping) the dashboard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.app.ui.conftest import PASSWORD, free_port


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RADCHECK_")},
        "RADCHECK_STORAGE__DATA_DIR": str(tmp / "data"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        **extra,
    }


def radcheck(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_user_commands(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    assert radcheck(env, "db", "upgrade").returncode == 0
    made = radcheck(
        env,
        "user",
        "create",
        "--role",
        "radiologist",
        "--name",
        "Dr Jane Doe",
        "--username",
        "jdoe",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout + made.stderr
    dup = radcheck(
        env,
        "user",
        "create",
        "--role",
        "radiologist",
        "--name",
        "X",
        "--username",
        "jdoe",
        stdin=PASSWORD + "\n",
    )
    assert dup.returncode == 2 and "already exists" in dup.stderr
    short = radcheck(
        env,
        "user",
        "create",
        "--role",
        "radiologist",
        "--name",
        "X",
        "--username",
        "x2",
        stdin="short\n",
    )
    assert short.returncode == 2 and "at least 10" in short.stderr
    role = radcheck(
        env,
        "user",
        "create",
        "--role",
        "integration",
        "--name",
        "X",
        "--username",
        "x3",
        stdin=PASSWORD + "\n",
    )
    assert role.returncode == 2 and "apikey create" in role.stderr
    bad = radcheck(
        env,
        "user",
        "create",
        "--role",
        "admin",
        "--name",
        "X",
        "--username",
        "Bad Name!",
        stdin=PASSWORD + "\n",
    )
    assert bad.returncode == 2 and "not usable" in bad.stderr
    assert "jdoe\tradiologist\tactive\tDr Jane Doe" in radcheck(env, "user", "list").stdout
    assert radcheck(env, "user", "disable", "--username", "jdoe").returncode == 0
    assert "jdoe\tradiologist\tdisabled" in radcheck(env, "user", "list").stdout
    assert radcheck(env, "user", "enable", "--username", "jdoe").returncode == 0
    missing = radcheck(env, "user", "disable", "--username", "nobody")
    assert missing.returncode == 2 and "No user named 'nobody'" in missing.stderr


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def _gone(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            return True
        time.sleep(0.3)
    return False


def test_serve_starts_the_dashboard_and_takes_it_down_with_it(tmp_path: Path) -> None:
    api_port, ui_port = free_port(), free_port()
    env = env_for(tmp_path, RADCHECK_UI__PORT=str(ui_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--migrate", "--port", str(api_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_health(f"http://127.0.0.1:{api_port}/api/v1/health", proc)
        _wait_health(f"http://127.0.0.1:{ui_port}/_stcore/health", proc)
        page = httpx.get(f"http://127.0.0.1:{ui_port}/", timeout=10)
        assert page.status_code == 200 and "<title>" in page.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert _gone(f"http://127.0.0.1:{ui_port}/_stcore/health"), (
        "the dashboard outlived `radcheck serve`"
    )


def test_ui_command_and_no_ui(tmp_path: Path) -> None:
    ui_port, api_port = free_port(), free_port()
    env = env_for(tmp_path, RADCHECK_UI__PORT=str(free_port()))
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "ui",
            "--port",
            str(ui_port),
            "--api-url",
            f"http://127.0.0.1:{api_port}/api/v1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_health(f"http://127.0.0.1:{ui_port}/_stcore/health", ui)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)
    assert _gone(f"http://127.0.0.1:{ui_port}/_stcore/health")
    # --no-ui: the API alone.
    ui_port = free_port()
    env = env_for(tmp_path, RADCHECK_UI__PORT=str(ui_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--migrate", "--no-ui", "--port", str(api_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_health(f"http://127.0.0.1:{api_port}/api/v1/health", proc)
        assert _gone(f"http://127.0.0.1:{ui_port}/_stcore/health", timeout=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
