"""compose.yaml: the Docker Compose client accepts it (when present), and what it runs exists."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from app.cli.main import cli
from app.settings import ENV_PREFIX, OTHER_VARIABLES, known_variables

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def _radcheck_commands() -> list[tuple[str, list[str]]]:
    """Every radcheck command line compose.yaml runs: a service's command (the image's entrypoint
    is ``radcheck``) and each healthcheck that calls ``radcheck``."""
    out = []
    for name, service in _services().items():
        if "command" in service:
            out.append((name, [str(a) for a in service["command"]]))
        test = service.get("healthcheck", {}).get("test", [])
        if test[:2] == ["CMD", "radcheck"]:
            out.append((f"{name} healthcheck", [str(a) for a in test[2:]]))
    return out


def test_every_radcheck_command_in_compose_exists() -> None:
    # ``--help`` after the arguments: the CLI resolves the command and refuses an unknown option
    # (exit 2) before it would show the help, and runs nothing.
    commands = _radcheck_commands()
    assert commands
    runner = CliRunner()
    for where, args in commands:
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (
            f"compose.yaml {where}: radcheck {' '.join(args)}: {result.output}"
        )


def test_every_radcheck_variable_in_compose_is_a_setting() -> None:
    known = known_variables() | OTHER_VARIABLES
    for name, service in _services().items():
        unknown = [
            key
            for key in service.get("environment", {})
            if key.startswith(ENV_PREFIX) and key not in known
        ]
        assert not unknown, f"compose.yaml {name}: not RadCheck settings: {unknown}"


def test_compose_config_validates() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose client on this machine (.ci/run installs docker-compose)")
    env = {
        **os.environ,
        "POSTGRES_PASSWORD": "example",
        "RADCHECK_MODEL_DIR": "/srv/models",
        "RADCHECK_HL7__ALLOWED_PEERS": '["10.1.2.3/32"]',
        "RADCHECK_LISTENER__ALLOWED_CALLING_AES": '["ORTHANC"]',
    }
    ok = subprocess.run(
        [*command, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    missing = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(
        [*command, "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env=missing,
        check=False,
    )
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr
