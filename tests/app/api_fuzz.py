"""Schema-driven fuzzing of the HTTP API (schemathesis) against a real server on loopback.

Used by the CI test (a few examples per route) and by ``bench/fuzz_api.py`` (many). Every
operation of the app's OpenAPI document is called with generated valid and invalid input; a 5xx,
or an error whose body is not the one error shape (type, detail, request_id), is a failure.
Mutated real DICOM files (the dicom_io fuzz corpus) are also posted to the upload path.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from schemathesis.generation import GenerationMode

from app.api import create_app
from app.settings import Settings

ERROR_KEYS = {"type", "detail", "request_id"}


@dataclass
class FuzzStats:
    examples: int = 0
    server_errors: int = 0
    bad_error_shapes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "server_errors": self.server_errors,
            "bad_error_shapes": self.bad_error_shapes,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "per_operation": self.per_operation,
            "failures": self.failures[:50],
            "no_invalid_input_possible": self.unsatisfiable,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; stopped on exit."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="fuzz-server", daemon=True)
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


def _judge(stats: FuzzStats, label: str, status: int, body: bytes, request_id: str | None) -> None:
    stats.examples += 1
    stats.statuses[status] += 1
    stats.per_operation[label] = stats.per_operation.get(label, 0) + 1
    if status >= 500 and status != 503:
        stats.server_errors += 1
        stats.failures.append(f"{label}: {status} {body[:200]!r}")
        return
    if status >= 400:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if (
            not isinstance(parsed, dict)
            or not parsed.keys() >= ERROR_KEYS
            or parsed["request_id"] != request_id
        ):
            stats.bad_error_shapes += 1
            stats.failures.append(f"{label}: {status} not in the error shape: {body[:200]!r}")


def _runner(
    stats: FuzzStats,
    operation: Any,
    mode: GenerationMode,
    label: str,
    base_url: str,
    headers: dict[str, str],
    max_examples: int,
    seed: int,
) -> Any:
    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        rid = response.headers.get("x-request-id") or [None]
        _judge(stats, label, response.status_code, response.content, rid[0])

    return run


def fuzz_operations(
    base_url: str, headers: dict[str, str], *, max_examples: int, seed: int = 0
) -> FuzzStats:
    """Every operation, valid and invalid input, ``max_examples`` each per mode."""
    stats = FuzzStats()
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = _runner(stats, operation, mode, label, base_url, headers, max_examples, seed)
            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                stats.unsatisfiable.append(f"{label} ({mode.value})")  # nothing to make invalid
    return stats


def fuzz_upload(
    base_url: str, headers: dict[str, str], originals: list[bytes], *, files: int, seed: int
) -> FuzzStats:
    """Mutated real DICOM files posted to POST /api/v1/instances, a few per request."""
    from tests.dicom_io.test_fuzz import mutate

    rng = random.Random(seed)
    stats = FuzzStats()
    label = "POST /api/v1/instances (mutated DICOM)"
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        sent = 0
        while sent < files:
            batch = [
                (
                    "files",
                    (f"m{sent + i}.dcm", mutate(rng.choice(originals), rng), "application/dicom"),
                )
                for i in range(min(4, files - sent))
            ]
            sent += len(batch)
            response = client.post("/api/v1/instances", files=batch)
            _judge(
                stats,
                label,
                response.status_code,
                response.content,
                response.headers.get("x-request-id"),
            )
    return stats
