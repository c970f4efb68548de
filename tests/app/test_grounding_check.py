"""Grounding in stored checks: the tiny LLaVA-Rad checkpoint through the real runtime, the worker,
the database and the API. A real PA chest film (pydicom-data RG1_UNCR.dcm, PatientOrientation L\\F)
and a report go in; the check stores model flags whose boxes are in original film pixels with their
method, the grounding rows, and a heat-map PNG the API serves. A study without a usable image, the
``none`` backend and a failing relevance computation each store a clear outcome.

The tiny model is random: its map is noise, but deterministic, and the grounding question carries no
side, so the same box comes back whichever side the report states; the side check is what is tested.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image

from app.api import create_app
from app.db.session import Database
from app.services import jobs
from app.services.auth import create_api_key
from app.services.pipeline import CheckPipeline
from app.services.reports import ReportSubmission
from app.settings import Settings
from app.worker.runner import Worker
from medvlm.checking import Checker, CheckerConfig
from medvlm.grounding import GroundingError
from medvlm.runtime.base import GenerationResult
from tests.app.conftest import auth
from tests.app.jobs_support import add_study, run_one
from tests.medvlm.test_runtime_helpers import network_guard

API = "/api/v1"
FILM = (1841, 1955)  # RG1_UNCR.dcm: columns x rows
LEFT = ReportSubmission(
    findings="Small left pleural effusion. No pneumothorax.",
    impression="Small left pleural effusion.",
)
RIGHT = ReportSubmission(
    findings="Small right pleural effusion. No pneumothorax.",
    impression="Small right pleural effusion.",
)


@pytest.fixture(scope="module")
def tiny_runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from medvlm.runtime import TransformersRuntime
    from medvlm.tiny import init_tiny_checkpoint

    with network_guard():
        folder = init_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)
        return TransformersRuntime(folder, device="cpu", max_new_tokens=8)


class _FailingRelevance:
    """The real tiny runtime, except that computing a relevance map fails (as an OOM would)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def supports_boxes(self) -> bool:
        return False

    def provenance(self) -> dict[str, str]:
        return dict(self.inner.provenance())

    def generate(
        self, image: NDArray[np.uint8] | None, instruction: str, *, max_new_tokens: int = 256
    ) -> GenerationResult:
        result: GenerationResult = self.inner.generate(
            image, instruction, max_new_tokens=max_new_tokens
        )
        return result

    def relevance(self, image: NDArray[np.uint8], instruction: str, *, method: str = "") -> Any:
        raise GroundingError("the relevance map could not be computed (injected failure)")


def _check(db: Database, settings: Settings, runtime: Any, uid: str) -> int:
    with db.session() as session:
        job, _ = jobs.request_check(
            session, study_uid=uid, actor="t", max_attempts=1, report_version=None
        )
        job_id = job.id
    config = CheckerConfig(max_new_tokens=8, max_verify_prompts=2, max_grounding_calls=2)
    pipeline = CheckPipeline(checker=Checker(runtime=runtime, config=config), runtime=runtime)
    worker = Worker(
        db,
        lambda: pipeline,
        files_dir=settings.files_dir,
        lease_s=120,
        poll_interval_s=0.05,
        quiet_period_s=0.01,
    )
    with network_guard():
        assert run_one(worker, timeout=300)
    return job_id


@pytest.fixture
def api(sqlite_settings: Settings) -> Iterator[tuple[TestClient, str, Database]]:
    db = Database(sqlite_settings.database_url)
    with db.session() as session:
        _, key = create_api_key(session, name="test-radiologist", role="radiologist")
    with TestClient(create_app(sqlite_settings, run_worker=False)) as client:
        yield client, key, db
    db.dispose()


def _get(client: TestClient, key: str, path: str) -> Any:
    response = client.get(f"{API}{path}", headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_check_stores_a_model_flag_with_a_box_on_the_film_and_the_api_returns_it(
    api: tuple[TestClient, str, Database],
    sqlite_settings: Settings,
    tiny_runtime: Any,
    rg1_path: Path,
) -> None:
    client, key, db = api
    left = _check(
        db, sqlite_settings, tiny_runtime, add_study(db, sqlite_settings, rg1_path, 1, LEFT)
    )
    right = _check(
        db, sqlite_settings, tiny_runtime, add_study(db, sqlite_settings, rg1_path, 2, RIGHT)
    )
    job = _get(client, key, f"/checks/{left}")
    assert job["status"] == "succeeded", job["error"]
    summary = job["provenance"]["grounding"]
    assert summary["status"] == "ran" and summary["method"] == "gradient_x_input"
    assert summary["attempts"] == 1 and summary["failed"] == 0  # one finding: pleural effusion
    [grounding] = job["groundings"]
    assert grounding["status"] == "ok" and grounding["target"] == "pleural_effusion"
    assert grounding["source"] == "relevance" and grounding["method"] == "gradient_x_input"
    assert (grounding["film_width"], grounding["film_height"]) == FILM
    assert not {"left", "right"} & set(grounding["question"].split())  # asked without a side
    # The tiny model's box lies on the patient's right (viewer's left, PatientOrientation L\F) ...
    assert grounding["side"]["side"] == "right" and "rows L" in grounding["side"]["basis"]
    # ... so the report's "left" effusion is a model laterality flag carrying that box.
    flags = [f for f in job["flags"] if f["rule_id"] == "model.ground.side"]
    assert flags, [f["rule_id"] for f in job["flags"]]
    for flag in flags:
        assert flag["source"] == "model" and flag["subtype"] == "laterality"
        [box, *_] = flag["boxes"]
        x0, y0, x1, y1 = box["box"]
        assert 0 <= x0 < x1 <= FILM[0] / 2 and 0 <= y0 < y1 <= FILM[1]
        assert box["space"] == "original_pixels" and box["label"] == "pleural effusion"
        assert (box["source"], box["method"]) == ("relevance", "gradient_x_input")
        assert box["grounding_id"] == grounding["id"]
        assert flag["evidence"]["grounding"]["map_statistics"]["peak"] > 0
        assert box["box"] == grounding["boxes"][0]["box"]
    # the verification answer about the finding carries the same boxes as evidence
    answers = job["provenance"]["model_answers"]
    verify = [a for a in answers if a["prompt_id"] == "verify.finding"]
    grounded = [a for a in verify if a["target"] == "pleural_effusion"]
    assert grounded and all(a["evidence"]["boxes"][0]["box"] == box["box"] for a in grounded)
    assert all("evidence" not in a for a in verify if a["target"] != "pleural_effusion")
    # The heat map: an RGBA overlay with the film's aspect.
    png = client.get(grounding["heatmap_url"], headers=auth(key))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(png.content))
    assert overlay.mode == "RGBA"
    assert overlay.size[0] / overlay.size[1] == pytest.approx(FILM[0] / FILM[1], rel=0.02)
    assert np.asarray(overlay)[..., 3].max() > 0
    assert _get(client, key, f"/checks/{left}/groundings") == job["groundings"]
    # The same film with the report on the right: the same box (deterministic, side-free
    # question), and no side flag.
    other = _get(client, key, f"/checks/{right}")
    assert other["groundings"][0]["boxes"] == grounding["boxes"]
    assert not any(f["rule_id"] == "model.ground.side" for f in other["flags"])


def test_unknown_grounding_and_missing_map_are_clear_404s(
    api: tuple[TestClient, str, Database],
    sqlite_settings: Settings,
    tiny_runtime: Any,
    rg1_path: Path,
) -> None:
    client, key, db = api
    uid = add_study(db, sqlite_settings, rg1_path, 3, LEFT)
    job_id = _check(db, sqlite_settings, _FailingRelevance(tiny_runtime), uid)
    job = _get(client, key, f"/checks/{job_id}")
    # A failed relevance computation does not fail the check; its outcome is stored.
    assert job["status"] == "succeeded"
    assert job["provenance"]["grounding"]["failed"] == 1
    [grounding] = job["groundings"]
    assert grounding["status"] == "failed" and "injected failure" in grounding["error"]
    assert grounding["boxes"] == [] and grounding["heatmap_url"] is None
    assert not any(f["boxes"] for f in job["flags"])
    missing = client.get(
        f"{API}/checks/{job_id}/groundings/{grounding['id']}/heatmap.png", headers=auth(key)
    )
    assert missing.status_code == 404 and "no relevance map" in missing.json()["detail"]
    unknown = client.get(f"{API}/checks/{job_id}/groundings/999999/heatmap.png", headers=auth(key))
    assert unknown.status_code == 404 and "No grounding 999999" in unknown.json()["detail"]
    assert client.get(f"{API}/checks/999999/groundings", headers=auth(key)).status_code == 404


def test_none_backend_and_a_study_without_a_usable_image_store_why_nothing_was_grounded(
    api: tuple[TestClient, str, Database],
    sqlite_settings: Settings,
    tiny_runtime: Any,
    rg1_path: Path,
) -> None:
    from pydicom.data import get_testdata_file

    client, key, db = api
    none_job = _check(db, sqlite_settings, None, add_study(db, sqlite_settings, rg1_path, 4, LEFT))
    job = _get(client, key, f"/checks/{none_job}")
    assert job["status"] == "succeeded" and job["groundings"] == []
    assert job["provenance"]["grounding"]["status"] == "skipped"
    assert "RADCHECK_MODEL__BACKEND=none" in job["provenance"]["grounding"]["reason"]

    ct = Path(str(get_testdata_file("CT_small.dcm", download=False)))  # not a chest radiograph
    no_image = _check(
        db, sqlite_settings, tiny_runtime, add_study(db, sqlite_settings, ct, 5, LEFT)
    )
    job = _get(client, key, f"/checks/{no_image}")
    assert job["status"] == "succeeded" and job["groundings"] == []
    assert job["selection"]["chosen"] is None
    assert job["provenance"]["grounding"]["status"] == "skipped"
    assert "no usable image" in job["provenance"]["grounding"]["reason"]
