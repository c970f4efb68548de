"""Check jobs end to end with a real (tiny, random) model: the ``transformers`` backend in the
worker, and the ``openai`` backend against ``radcheck model serve``'s app on loopback.

A real radiograph (pydicom-data RG1_UNCR.dcm, MONOCHROME1 PA chest) and a report go in through the
API; the check must succeed with the model's provenance, its answers recorded (parsed strictly or
counted unparseable), render and check timings, and the same answers on every run and on both
backends. The tiny model's text is noise: nothing here judges clinical content.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from numpy.typing import NDArray

from app.api import create_app
from app.db.migrate import upgrade
from app.db.session import Database
from app.model_server import create_model_server
from app.services.auth import create_api_key
from app.settings import ModelBackend, ModelSettings, Settings
from medvlm.prompts.checking import (
    COMPLEX_CHOICES,
    SIMPLE_CHOICES,
    parse_choice_answer,
    parse_yes_no_answer,
)
from medvlm.runtime.base import GenerationResult
from medvlm.runtime.checkpoint import weights_sha256
from tests.app.conftest import TINY_MODEL_ID, auth, make_settings
from tests.app.dicomweb_support import free_port
from tests.medvlm.test_runtime_helpers import network_guard, offline_guard

__all__ = ["offline_guard"]

API = "/api/v1"
SERVER_KEY = "pipeline-test-key-0123456789"
REPORT = {
    "indication": "Cough.",
    "findings": "The heart size is normal. There is a small right pleural effusion. "
    "No pneumothorax.",
    "impression": "Small left pleural effusion.",
}
# Where the pipeline records the checker's model answers in the job provenance.
ANSWERS_KEY = "model_answers"
UNPARSEABLE_KEY = "unparseable_answers"


@dataclass
class _Call:
    instruction: str
    image_shape: tuple[int, ...] | None
    text: str


class _RecordingRuntime:
    """The real tiny runtime, recording what the model server was asked and what it answered."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[_Call] = []

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def supports_boxes(self) -> bool:
        return bool(self.inner.supports_boxes)

    def provenance(self) -> dict[str, str]:
        return dict(self.inner.provenance())

    def generate(
        self, image: NDArray[np.uint8] | None, instruction: str, *, max_new_tokens: int = 256
    ) -> GenerationResult:
        result: GenerationResult = self.inner.generate(
            image, instruction, max_new_tokens=max_new_tokens
        )
        shape = None if image is None else tuple(image.shape)
        self.calls.append(_Call(instruction, shape, result.text))
        return result


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medvlm.tiny import init_tiny_checkpoint

    with network_guard():
        return init_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def rg1() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    assert path is not None, "pydicom-data is a test dependency: pip install pydicom-data"
    return Path(str(path))


def _settings(data_dir: Path, model: ModelSettings) -> tuple[Settings, str]:
    settings = make_settings(data_dir, None)
    settings.model = model
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="test-integration", role="integration")
    db.dispose()
    return settings, key


def _wait(client: TestClient, key: str, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"{API}/checks/{job_id}", headers=auth(key)).json()
        if body["status"] in {"succeeded", "failed"}:
            return body
        time.sleep(0.1)
    raise AssertionError(f"check {job_id} did not finish in {timeout} s")


def _check_twice(settings: Settings, key: str, rg1: Path) -> list[dict[str, Any]]:
    """Upload the film and the report, then run two checks of it one after the other."""
    with TestClient(create_app(settings)) as client:
        files = [("files", (rg1.name, rg1.read_bytes(), "application/dicom"))]
        uploaded = client.post(f"{API}/instances", files=files, headers=auth(key))
        assert uploaded.status_code == 201, uploaded.text
        study = uploaded.json()["accepted"][0]["study_instance_uid"]
        report = client.post(f"{API}/studies/{study}/reports", json=REPORT, headers=auth(key))
        assert report.status_code == 201, report.text
        jobs = []
        for _ in range(2):
            requested = client.post(f"{API}/studies/{study}/checks", headers=auth(key))
            assert requested.status_code == 202, requested.text
            jobs.append(_wait(client, key, requested.json()["id"]))
    assert jobs[0]["id"] != jobs[1]["id"]
    return jobs


@pytest.fixture(scope="module")
def local_jobs(
    tiny: Path, rg1: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    model = ModelSettings(backend=ModelBackend.TRANSFORMERS, model_dir=tiny, device="cpu")
    settings, key = _settings(tmp_path_factory.mktemp("local") / "data", model)
    with network_guard():
        return _check_twice(settings, key, rg1)


@dataclass
class _Served:
    jobs: list[dict[str, Any]]
    calls: list[_Call]
    url: str


@pytest.fixture(scope="module")
def served(tiny: Path, rg1: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    from medvlm.runtime import TransformersRuntime

    with network_guard():
        runtime = _RecordingRuntime(TransformersRuntime(tiny, device="cpu"))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_model_server(runtime, api_key=SERVER_KEY),
                host="127.0.0.1",
                port=port,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "model server did not start"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            model = ModelSettings.model_validate(
                {
                    "backend": "openai",
                    "openai_base_url": url,
                    "openai_model": TINY_MODEL_ID,
                    "openai_api_key": SERVER_KEY,
                    "timeout_s": 60,
                }
            )
            settings, key = _settings(tmp_path_factory.mktemp("served") / "data", model)
            jobs = _check_twice(settings, key, rg1)
            yield _Served(jobs=jobs, calls=runtime.calls, url=url)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def _runtime_provenance(job: dict[str, Any]) -> dict[str, Any]:
    runtime: dict[str, Any] = job["provenance"]["checker"]["runtime"]
    return runtime


def _assert_model_check_succeeded(job: dict[str, Any], tiny: Path) -> None:
    assert job["status"] == "succeeded", job["error"]
    assert job["error"] is None
    provenance = job["provenance"]
    checker = provenance["checker"]
    assert checker["model_id"] == TINY_MODEL_ID
    runtime = _runtime_provenance(job)
    assert runtime["model_id"] == TINY_MODEL_ID
    assert runtime["weights_sha256"] == weights_sha256(tiny)
    assert (runtime["prompt_template_id"], runtime["prompt_template_version"]) == (
        "vicuna_v1",
        "1",
    )
    assert {"check.simple", "check.complex", "generate.findings", "verify.finding"} <= set(
        checker["prompts"]
    )
    assert "unverified AI output" in provenance["model_output"]
    assert provenance["image"]["sop_instance_uid"] == job["selection"]["chosen"]
    assert "model" not in provenance  # only set when no backend ran
    timings = job["stage_timings_ms"]
    for stage in ("select", "render", "check", "check.model_ms"):
        assert timings[stage] >= 0.0, stage
    assert timings["check.model_ms"] > 0.0
    # The text rule still fires: the model checks come on top of the rules, never instead.
    assert "text.laterality.findings_impression" in {f["rule_id"] for f in job["flags"]}


def _comparable(job: dict[str, Any]) -> dict[str, Any]:
    """What must not change between runs and backends (no ids, times or endpoint)."""
    return {
        "verdicts": (job["verdict_simple"], job["verdict_complex"]),
        "verdict_reason": job["provenance"]["checker"]["verdict_reason"],
        "flags": sorted(
            (f["rule_id"], f["subtype"], f["severity"], f["span_start"], f["span_end"])
            for f in job["flags"]
        ),
        "image_steps": job["provenance"]["image"]["steps"],
    }


def test_transformers_backend_check_succeeds_with_model_provenance(
    local_jobs: list[dict[str, Any]], tiny: Path
) -> None:
    for job in local_jobs:
        _assert_model_check_succeeded(job, tiny)
        runtime = _runtime_provenance(job)
        assert (runtime["backend"], runtime["device"]) == ("transformers", "cpu")
        assert '"enabled": false' in runtime["slicing"]  # LLaVA-Rad: no slicing by default
        assert '"do_sample": false' in runtime["generation"]
    assert _comparable(local_jobs[0]) == _comparable(local_jobs[1])


def test_openai_backend_check_goes_through_the_served_model(
    served: _Served, local_jobs: list[dict[str, Any]], tiny: Path
) -> None:
    for job in served.jobs:
        _assert_model_check_succeeded(job, tiny)
        runtime = _runtime_provenance(job)
        assert (runtime["backend"], runtime["endpoint"]) == ("openai", served.url)
        assert SERVER_KEY not in str(job)
    # Every model question of both checks reached the server, with the rendered film attached
    # to the image questions, and the same questions came in the same order both times.
    assert served.calls and len(served.calls) % 2 == 0
    half = len(served.calls) // 2
    first, second = served.calls[:half], served.calls[half:]
    assert first == second
    shapes = {call.image_shape for call in first if call.image_shape is not None}
    assert len(shapes) == 1 and min(next(iter(shapes))) > 500
    # Relevance-map grounding needs the model's gradients: only the local backend has them. The
    # remote check says so in its stored outcome; every other flag is the same on both backends.
    assert served.jobs[0]["provenance"]["grounding"]["status"] == "skipped"
    assert "relevance" in served.jobs[0]["provenance"]["grounding"]["reason"]
    local = _comparable(local_jobs[0])
    local["flags"] = [f for f in local["flags"] if not f[0].startswith("model.ground.")]
    assert _comparable(served.jobs[0]) == local


def _answers(job: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The recorded model answers without their timings."""
    provenance = job["provenance"]
    answers = provenance[ANSWERS_KEY]
    assert isinstance(answers, list) and answers
    return [
        (a["prompt_id"], a["prompt_version"], a["target"], a["raw_text"], a["parsed"], a["error"])
        for a in answers
    ]


def _strict_parse(prompt_id: str, raw: str) -> str | None:
    if prompt_id == "check.simple":
        return parse_choice_answer(raw, SIMPLE_CHOICES)
    if prompt_id == "check.complex":
        return parse_choice_answer(raw, COMPLEX_CHOICES)
    if prompt_id == "verify.finding":
        value = parse_yes_no_answer(raw)
        return None if value is None else ("yes" if value else "no")
    return raw.strip() or None  # generate.*: the written findings themselves


def test_model_answers_are_recorded_parsed_strictly_and_deterministic(
    local_jobs: list[dict[str, Any]],
) -> None:
    first, second = (_answers(job) for job in local_jobs)
    assert first == second
    unparseable = 0
    for prompt_id, _version, _target, raw, parsed, error in first:
        assert error is None
        assert parsed == _strict_parse(prompt_id, raw), (prompt_id, raw)
        unparseable += parsed is None
    assert local_jobs[0]["provenance"][UNPARSEABLE_KEY] == unparseable
    # The report has an indication: the findings are generated with it.
    assert {a[0] for a in first} >= {
        "check.simple",
        "check.complex",
        "generate.findings_indication",
        "verify.finding",
    }


def test_openai_backend_gives_the_same_model_answers(
    served: _Served, local_jobs: list[dict[str, Any]]
) -> None:
    remote = _answers(served.jobs[0])
    assert remote == _answers(served.jobs[1]) == _answers(local_jobs[0])
    assert [raw for *_, raw, _parsed, _error in remote] == [
        c.text for c in served.calls[: len(remote)]
    ]
