"""compose.yaml: the production topology, validated by the Docker Compose client when present."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_topology() -> None:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) >= {"db", "api", "worker", "hl7", "dicom"}
    dicom = services["dicom"]
    assert dicom["command"][:2] == ["dicom", "listen"]
    assert (
        "RADCHECK_LISTENER__ALLOWED_CALLING_AES:?"
        in (dicom["environment"]["RADCHECK_LISTENER__ALLOWED_CALLING_AES"])
    )
    assert "dicomdata:/data" in dicom["volumes"]  # the same store as the API
    assert services["hl7"]["command"][:2] == ["hl7", "listen"]
    assert (
        "RADCHECK_HL7__ALLOWED_PEERS:?"
        in services["hl7"]["environment"]["RADCHECK_HL7__ALLOWED_PEERS"]
    )
    assert "healthcheck" in services["db"] and "pgdata" in spec["volumes"]
    assert services["api"]["command"][:2] == ["serve", "--migrate"]
    assert services["api"]["depends_on"]["db"]["condition"] == "service_healthy"
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert any(v.endswith(":/models/llava-rad:ro") for v in worker["volumes"])
    for name in ("db", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert "${POSTGRES_PASSWORD:?" in COMPOSE.read_text()


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
