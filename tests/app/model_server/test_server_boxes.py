"""Box-native models: the model server advertises the ``boxes`` capability (``GET /v1/models``)
when its checkpoint declares it, the ``openai`` client checks it, and only then is the
``LOCALISE_FINDING`` prompt offered; its box becomes a grounding in original film pixels.

The tiny checkpoint with the capability declared goes through the real server and client (its
answers are noise, recorded as unparseable). No box-native weights exist here, so one test puts a
runtime that answers a fixed box behind the real server: that part is scripted, and says so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from medvlm.checking import Checker, CheckerConfig
from medvlm.reports import ParsedReport
from medvlm.runtime import OpenAIRuntime, TransformersRuntime
from medvlm.runtime.base import GenerationResult
from tests.app.model_server_support import ModelServerThread
from tests.medvlm.test_runtime_helpers import network_guard, offline_guard, tiny_checkpoint

__all__ = ["offline_guard", "tiny_checkpoint"]

LOCALISE_KEY = "Answer with one bounding box"
REPORT = ParsedReport.from_sections(
    findings="Small right pleural effusion.", impression="Small right pleural effusion."
)
FILM = np.random.default_rng(5).integers(0, 256, size=(500, 400), dtype=np.uint8)


@pytest.fixture(scope="module")
def box_checkpoint(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint declaring that it answers boxes (as a grounding model's would)."""
    folder = tmp_path_factory.mktemp("box") / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    meta = folder / "radcheck_model.json"
    data = json.loads(meta.read_text(encoding="utf-8"))
    meta.write_text(json.dumps({**data, "capabilities": ["boxes"]}), encoding="utf-8")
    return folder


class _Recording:
    """Records the instructions the server's runtime was asked (optionally answering a box)."""

    def __init__(self, inner: Any, box: str | None = None) -> None:
        self.inner = inner
        self.box = box
        self.asked: list[str] = []

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
        self.asked.append(instruction)
        if self.box is not None and LOCALISE_KEY in instruction:
            return GenerationResult(text=self.box, output_tokens=12)  # scripted: see the docstring
        result: GenerationResult = self.inner.generate(
            image, instruction, max_new_tokens=max_new_tokens
        )
        return result


def _check(url: str, model: str) -> tuple[Any, OpenAIRuntime]:
    client = OpenAIRuntime(f"{url}/v1", model, timeout_s=60)
    config = CheckerConfig(max_new_tokens=8, max_verify_prompts=1, generate_and_compare=False)
    return Checker(runtime=client, config=config).check(REPORT, image=FILM), client


def test_the_server_advertises_boxes_and_the_client_offers_localisation_only_then(
    tiny_checkpoint: Path, box_checkpoint: Path
) -> None:
    import httpx

    for folder, boxes in ((box_checkpoint, True), (tiny_checkpoint, False)):
        runtime = _Recording(TransformersRuntime(folder, device="cpu", max_new_tokens=8))
        assert runtime.supports_boxes is boxes
        with network_guard(), ModelServerThread(runtime) as url:
            cards = httpx.get(f"{url}/v1/models").json()["data"]
            assert cards[0]["capabilities"] == (["boxes"] if boxes else [])
            result, client = _check(url, runtime.model_id)
        assert client.supports_boxes is boxes
        assert client.provenance()["capabilities"] == json.dumps(["boxes"] if boxes else [])
        assert any(LOCALISE_KEY in a for a in runtime.asked) is boxes
        localise = [a for a in result.model_answers if a.prompt_id == "localise.finding"]
        assert len(localise) == (1 if boxes else 0)
        # the tiny model's answer is noise: recorded, never turned into a box
        assert all(a.parsed is None and a.raw_text for a in localise)
        assert not [g for g in result.groundings if g.source == "model"]
        # relevance maps need the model's gradients: never through an endpoint
        assert result.grounding["status"] == "skipped"
        assert "computes no relevance maps" in str(result.grounding["reason"])


def test_a_box_from_a_box_native_model_becomes_a_grounding_on_the_film(
    box_checkpoint: Path,
) -> None:
    runtime = _Recording(
        TransformersRuntime(box_checkpoint, device="cpu", max_new_tokens=8),
        box="[0.60, 0.40, 0.85, 0.75]",
    )
    with network_guard(), ModelServerThread(runtime) as url:
        result, _ = _check(url, runtime.model_id)
    [grounding] = [g for g in result.groundings if g.source == "model"]
    assert grounding.method == "localise_finding" and grounding.status == "ok"
    assert grounding.boxes[0].box == (240.0, 200.0, 340.0, 375.0)  # fractions of the 400 x 500 film
    assert grounding.side is not None and grounding.side.side == "left"
    [flag] = [f for f in result.flags if f.rule_id == "model.localise.side"]
    assert flag.evidence["boxes"][0]["box"] == [240.0, 200.0, 340.0, 375.0]
    assert flag.evidence["boxes"][0]["source"] == "model"
    assert result.grounding["box_native"] is True and result.grounding["status"] == "ran"
