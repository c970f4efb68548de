"""Grounding inside the checker, with a scripted runtime whose relevance map is a fixed blob (the
map itself is tested on a toy model and the tiny checkpoint elsewhere): the call budget, which
findings come first, the side check against the film's orientation, evidence on flags."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from medvlm.checking import Checker, CheckerConfig, CheckerConfigError, FilmContext
from medvlm.grounding import FilmMap, Relevance, RelevanceMethod
from medvlm.reports import ParsedReport
from medvlm.runtime.base import GenerationResult

FILM = np.zeros((200, 100), dtype=np.uint8)


class BlobRuntime:
    """Answers "I am not sure." and puts all relevance in one blob on the viewer's left."""

    def __init__(self) -> None:
        self.questions: list[str] = []

    @property
    def model_id(self) -> str:
        return "blob"

    @property
    def supports_boxes(self) -> bool:
        return False

    def provenance(self) -> dict[str, str]:
        return {"model_id": "blob"}

    def generate(
        self, image: NDArray[np.uint8] | None, instruction: str, *, max_new_tokens: int = 256
    ) -> GenerationResult:
        return GenerationResult(text="I am not sure.")

    def relevance(self, image: NDArray[np.uint8], instruction: str, *, method: str = "") -> Any:
        self.questions.append(instruction)
        values = np.zeros((20, 10), dtype=np.float32)
        values[8:12, 1:3] = 1.0  # film x 10..30 of 100: the viewer's left
        return Relevance(FilmMap(values, (100, 200)), RelevanceMethod(method), 0.5, {}, {})


REPORT = ParsedReport.from_sections(
    findings="Cardiomegaly. Small left pleural effusion. Right upper lobe nodule.",
)


def _check(film: FilmContext | None = None, **config: Any) -> tuple[Any, BlobRuntime]:
    runtime = BlobRuntime()
    checker = Checker(runtime=runtime, config=CheckerConfig(**config))
    return checker.check(REPORT, image=FILM, film=film), runtime


def test_grounding_is_bounded_and_sided_findings_come_first() -> None:
    result, runtime = _check(max_grounding_calls=2)
    assert len(runtime.questions) == 2 and len(result.groundings) == 2
    assert [g.target for g in result.groundings] == ["pleural_effusion", "lung_lesion"]
    assert result.grounding["attempts"] == 2 and result.grounding["status"] == "ran"
    everything, runtime = _check(max_grounding_calls=8)
    assert {g.target for g in everything.groundings} == {
        "pleural_effusion",
        "lung_lesion",
        "cardiomegaly",
    }
    off, runtime = _check(max_grounding_calls=0)
    assert runtime.questions == [] and off.groundings == ()
    assert off.grounding["status"] == "skipped" and "off" in off.grounding["reason"]


def test_the_box_side_is_read_through_the_film_orientation() -> None:
    usual, _ = _check()  # blob on the viewer's left = the patient's right
    side = {f.concept: f for f in usual.flags if f.rule_id == "model.ground.side"}
    assert set(side) == {"pleural_effusion"}  # reported left: contradicted; the right nodule agrees
    flag = side["pleural_effusion"]
    assert flag.evidence["boxes"][0]["box"] == [10.0, 80.0, 30.0, 120.0]
    assert flag.evidence["boxes"][0]["method"] == "gradient_x_input"
    assert "right" in flag.message and "left" in flag.message
    flipped, _ = _check(FilmContext(patient_orientation=("R", "F")))
    assert {f.concept for f in flipped.flags if f.rule_id == "model.ground.side"} == {"lung_lesion"}
    lateral, _ = _check(FilmContext(view_position="LL"))
    assert not [f for f in lateral.flags if f.rule_id == "model.ground.side"]
    assert all(g.side is not None and g.side.side is None for g in lateral.groundings)


def test_no_image_is_a_recorded_skip() -> None:
    runtime = BlobRuntime()
    result = Checker(runtime=runtime).check(REPORT, image=None)
    assert runtime.questions == []
    assert result.grounding == {
        "method": "gradient_x_input",
        "max_grounding_calls": 4,
        "box_native": False,
        "status": "skipped",
        "reason": "no usable image: nothing to ground findings in",
    }
    text_only = Checker(runtime=None).check(REPORT)
    assert text_only.grounding["status"] == "skipped"
    assert "no model backend" in text_only.grounding["reason"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_grounding_calls", 33, "max_grounding_calls 33 outside 0..32"),
        ("grounding_method", "attention", "is not 'gradient_x_input' or 'occlusion'"),
        ("grounding_threshold", 1.0, "grounding_threshold 1.0 outside"),
    ],
)
def test_grounding_config_is_validated(field: str, value: object, message: str) -> None:
    with pytest.raises(CheckerConfigError, match=message):
        CheckerConfig(**{field: value})  # type: ignore[arg-type]
