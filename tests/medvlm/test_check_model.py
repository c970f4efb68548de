"""Model checks through a scripted runtime (canned answers, including unparseable ones), and one
end-to-end run with the tiny random LLaVA checkpoint (plumbing only: its answers are meaningless)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from medvlm.checking import Checker, CheckerConfig, CheckerInputError, CheckResult
from medvlm.errors import MedVLMError
from medvlm.prompts.checking import (
    COMPLEX_ERROR_CHECK,
    GENERATE_FINDINGS,
    GENERATE_FINDINGS_WITH_INDICATION,
    LOCALISE_FINDING,
    SIMPLE_ERROR_CHECK,
    VERIFY_FINDING,
)
from medvlm.reports import ParsedReport
from medvlm.runtime.base import GenerationResult, VisionLanguageRuntime
from medvlm.taxonomy import ComplexClass, ErrorSubtype, FlagSource, Severity

Answer = Callable[[str], str]
IMAGE = np.zeros((64, 48), dtype=np.uint8)


class ScriptedRuntime:
    """Implements the runtime protocol with canned answers chosen by the instruction's prompt."""

    def __init__(self, answers: dict[str, str | Answer], *, boxes: bool = False) -> None:
        self._answers = answers
        self._boxes = boxes
        self.calls: list[tuple[str, bool]] = []

    @property
    def model_id(self) -> str:
        return "scripted-test-runtime"

    @property
    def supports_boxes(self) -> bool:
        return self._boxes

    def provenance(self) -> dict[str, str]:
        return {"model_id": self.model_id, "weights_sha256": "none"}

    def generate(
        self, image: NDArray[np.uint8] | None, instruction: str, *, max_new_tokens: int = 256
    ) -> GenerationResult:
        self.calls.append((instruction, image is not None))
        for key, answer in self._answers.items():
            if key in instruction:
                if answer == "RAISE":
                    raise MedVLMError("the scripted backend failed on purpose")
                text = answer(instruction) if callable(answer) else answer
                return GenerationResult(text=text, output_tokens=len(text.split()))
        return GenerationResult(text="I am not sure.")


SIMPLE_KEY = "Does the findings section contain"
COMPLEX_KEY = "Which kind of error"
GENERATE_KEY = "Provide a description of the findings"
VERIFY_KEY = "Answer with one word: yes or no."
LOCALISE_KEY = "Answer with one bounding box"

REPORT = ParsedReport.from_sections(
    findings="Small right pleural effusion. No pneumothorax. Heart size is normal.",
    impression="Small right pleural effusion.",
    indication="Cough.",
)


def run(runtime: ScriptedRuntime, report: ParsedReport = REPORT, **config: object) -> CheckResult:
    checker = Checker(runtime=runtime, config=CheckerConfig(**config))  # type: ignore[arg-type]
    return checker.check(report, image=IMAGE)


def test_scripted_runtime_implements_the_protocol() -> None:
    assert isinstance(ScriptedRuntime({}), VisionLanguageRuntime)


def test_simple_and_complex_answers_decide_only_together() -> None:
    runtime = ScriptedRuntime(
        {SIMPLE_KEY: "Y", COMPLEX_KEY: "(B)", GENERATE_KEY: "", VERIFY_KEY: "Yes."}
    )
    result = run(runtime, verify_findings=False)
    assert result.flags == ()
    assert (result.verdict_simple, result.verdict_complex) == ("Y", ComplexClass.INSERT)
    assert result.provenance["verdict_reason"] == "model SIMPLE and COMPLEX answers"
    assert result.provenance["runtime"]["model_id"] == "scripted-test-runtime"
    disagree = run(ScriptedRuntime({SIMPLE_KEY: "Y", COMPLEX_KEY: "A"}), verify_findings=False)
    assert disagree.verdict_simple == "N"
    ignored = run(
        ScriptedRuntime({SIMPLE_KEY: "Y", COMPLEX_KEY: "D"}),
        verify_findings=False,
        use_model_verdict=False,
    )
    assert ignored.verdict_simple == "N"


def test_unparseable_answers_are_counted_and_never_guessed() -> None:
    runtime = ScriptedRuntime(
        {
            SIMPLE_KEY: "Yes, there is an error.",
            COMPLEX_KEY: "B or C",
            GENERATE_KEY: "   ",
            VERIFY_KEY: "Possibly.",
        }
    )
    result = run(runtime)
    assert result.verdict_simple == "N" and result.flags == ()
    # simple, complex, generate (empty) and one verify per distinct (finding, presence, side)
    verify = [a for a in result.model_answers if a.prompt_id == VERIFY_FINDING.id]
    assert len(verify) == 3
    assert result.unparseable_answers == 3 + len(verify)
    assert all(not a.parseable for a in result.model_answers)
    raw = {a.prompt_id: a.raw_text for a in result.model_answers}
    assert raw[SIMPLE_ERROR_CHECK.id] == "Yes, there is an error."
    data = json.loads(json.dumps(result.to_dict()))
    assert data["unparseable_answers"] == result.unparseable_answers
    assert data["model_answers"][0]["ai_generated"] is True


def test_generate_and_compare() -> None:
    runtime = ScriptedRuntime(
        {
            SIMPLE_KEY: "N",
            COMPLEX_KEY: "A",
            GENERATE_KEY: "Large left pleural effusion. Small right pneumothorax. "
            "Moderate cardiomegaly. Right lower lobe consolidation.",
        }
    )
    result = run(runtime, verify_findings=False)
    by = {(f.subtype, f.concept): f for f in result.flags}
    side = by[(ErrorSubtype.LATERALITY, "pleural_effusion")]
    assert (side.section, side.sentence_index, side.source) == ("findings", 0, FlagSource.MODEL)
    assert side.evidence["prompt_id"] == GENERATE_FINDINGS_WITH_INDICATION.id
    assert "Large left pleural effusion" in side.evidence["model_answer"]
    assert (ErrorSubtype.SEVERITY, "pleural_effusion") in by
    denied = by[(ErrorSubtype.NEGATION, "pneumothorax")]
    assert denied.sentence_index == 1 and denied.severity is Severity.WARNING  # model-only: capped
    assert by[(ErrorSubtype.NEGATION, "cardiomegaly")].sentence_index == 2
    missed = by[(ErrorSubtype.REMOVE_FINDING, "consolidation")]
    assert missed.sentence_index is None
    assert all(f.confidence == 0.4 for f in result.flags)
    assert result.verdict_simple == "N"  # model-only flags stay below the verdict threshold
    calls = [c for c in runtime.calls if GENERATE_KEY in c[0]]
    assert calls and calls[0][1] is True and "indication: Cough." in calls[0][0]


@pytest.mark.parametrize(
    ("generated", "rule", "concept", "message"),
    [
        (
            "Right lower lobe consolidation.",
            "missed",
            "consolidation",
            "The model reports consolidation ('Right lower lobe consolidation.'), which the report "
            "does not mention.",
        ),
        (
            "Large left pleural effusion.",
            "side",
            "pleural_effusion",
            "The model places pleural effusion on the left ('Large left pleural effusion.'); "
            "findings sentence 1 says right.",
        ),
        (
            "Large left pleural effusion.",
            "severity",
            "pleural_effusion",
            "The model grades pleural effusion as 'severe' ('Large left pleural effusion.'); "
            "findings sentence 1 says 'mild'.",
        ),
        (
            "Small right pneumothorax.",
            "denied",
            "pneumothorax",
            "The model's own findings report pneumothorax ('Small right pneumothorax.'), which "
            "findings sentence 2 denies.",
        ),
        (
            "No pleural effusion.",
            "false",
            "pleural_effusion",
            "The model's own findings deny pleural effusion ('No pleural effusion.'), which "
            "findings sentence 1 reports.",
        ),
    ],
)
def test_generate_and_compare_rows_word_their_flags(
    generated: str, rule: str, concept: str, message: str
) -> None:
    """Each comparison row of generate-and-compare (golden strings: the table must not drift)."""
    result = run(ScriptedRuntime({GENERATE_KEY: generated}), verify_findings=False)
    flags = [f for f in result.flags if f.evidence["rule_id"] == f"model.generate_compare.{rule}"]
    assert [(f.concept, f.message) for f in flags] == [(concept, message)]
    assert flags[0].evidence["generated_sentence"] == generated
    assert flags[0].evidence["ai_generated"] is True


def test_generate_without_indication_uses_the_plain_prompt() -> None:
    runtime = ScriptedRuntime({GENERATE_KEY: "No pleural effusion."})
    report = ParsedReport.from_sections(findings="Small right pleural effusion.")
    result = run(runtime, report, verify_findings=False)
    gen = [a for a in result.model_answers if a.prompt_id.startswith("generate")]
    assert gen[0].prompt_id == GENERATE_FINDINGS.id
    flag = result.flags[0]
    assert (flag.subtype, flag.concept) == (ErrorSubtype.INSERT_FINDING, "pleural_effusion")


def test_verification_prompts_per_finding() -> None:
    def answer(instruction: str) -> str:
        return "no" if "meniscus" in instruction else "yes, it is visible"

    runtime = ScriptedRuntime({VERIFY_KEY: answer})
    result = run(runtime, generate_and_compare=False)
    asked = [a.target for a in result.model_answers if a.prompt_id == VERIFY_FINDING.id]
    assert asked == ["pleural_effusion", "pneumothorax", "cardiomegaly"]
    kinds = {(f.subtype, f.concept, f.sentence_index) for f in result.flags}
    assert kinds == {
        (ErrorSubtype.INSERT_FINDING, "pleural_effusion", 0),
        (ErrorSubtype.NEGATION, "pneumothorax", 1),
        (ErrorSubtype.NEGATION, "cardiomegaly", 2),
    }
    q = next(c for c, _ in runtime.calls if "meniscus" in c and VERIFY_KEY in c)
    assert "meniscus" in q and "right hemithorax" in q  # decomposed attributes at the side
    capped = run(ScriptedRuntime({VERIFY_KEY: "yes"}), generate_and_compare=False,
                 max_verify_prompts=1)  # fmt: skip
    assert len([a for a in capped.model_answers if a.prompt_id == VERIFY_FINDING.id]) == 1


def test_model_flag_agreeing_with_a_rule_is_merged() -> None:
    report = ParsedReport.from_sections(
        findings="Heart normal. Small left pneumothorax.", impression="Small right pneumothorax."
    )
    runtime = ScriptedRuntime({GENERATE_KEY: "Small right pneumothorax."})
    result = run(runtime, report, verify_findings=False)
    side = [f for f in result.flags if f.subtype is ErrorSubtype.LATERALITY]
    assert len(side) == 1
    flag = side[0]
    assert flag.source is FlagSource.TEXT_RULE and flag.severity is Severity.CRITICAL
    assert flag.confidence == pytest.approx(1 - (1 - 0.85) * (1 - 0.4))
    assert {m["source"] for m in flag.evidence["merged"]} == {"text_rule", "model"}


def test_localisation_only_when_boxes_are_supported() -> None:
    answers: dict[str, str | Answer] = {LOCALISE_KEY: "[0.70, 0.55, 0.90, 0.80]"}
    without = ScriptedRuntime(answers)
    run(without, verify_findings=False, generate_and_compare=False)
    assert not any(LOCALISE_KEY in c for c, _ in without.calls)
    with_boxes = ScriptedRuntime(answers, boxes=True)
    result = run(with_boxes, verify_findings=False, generate_and_compare=False)
    flag = next(f for f in result.flags if f.rule_id == "model.localise.side")
    # the patient's right is on the viewer's left: a box on the right half contradicts "right"
    assert flag.subtype is ErrorSubtype.LATERALITY and flag.concept == "pleural_effusion"
    assert flag.evidence["box_pixels"] == [34, 35, 43, 51]
    assert flag.evidence["prompt_id"] == LOCALISE_FINDING.id
    agree = run(ScriptedRuntime({LOCALISE_KEY: "[0.1, 0.5, 0.3, 0.8]"}, boxes=True),
                verify_findings=False, generate_and_compare=False)  # fmt: skip
    assert not any(f.rule_id == "model.localise.side" for f in agree.flags)
    bad = run(ScriptedRuntime({LOCALISE_KEY: "[1.5, 0, 2, 1]"}, boxes=True),
              verify_findings=False, generate_and_compare=False)  # fmt: skip
    assert bad.unparseable_answers >= 1


def test_runtime_errors_are_recorded_not_hidden() -> None:
    result = run(ScriptedRuntime({SIMPLE_KEY: "RAISE", COMPLEX_KEY: "A"}), verify_findings=False)
    failed = [a for a in result.model_answers if a.error]
    assert len(failed) == 1 and "failed on purpose" in (failed[0].error or "")
    assert result.unparseable_answers == 0


def test_no_image_skips_image_only_checks() -> None:
    runtime = ScriptedRuntime({SIMPLE_KEY: "N"})
    checker = Checker(runtime=runtime, config=CheckerConfig(verify_findings=False))
    checker.check(REPORT)
    assert not any(GENERATE_KEY in c for c, _ in runtime.calls)
    with pytest.raises(CheckerInputError, match="2-D uint8"):
        checker.check(REPORT, image=np.zeros((4, 4, 3), dtype=np.uint8))


def test_prompt_ids_are_in_provenance() -> None:
    result = run(ScriptedRuntime({}), verify_findings=False)
    prompts = result.provenance["prompts"]
    for template in (SIMPLE_ERROR_CHECK, COMPLEX_ERROR_CHECK, VERIFY_FINDING, LOCALISE_FINDING):
        assert prompts[template.id] == template.version


@pytest.fixture(scope="module")
def tiny_runtime(tmp_path_factory: pytest.TempPathFactory) -> VisionLanguageRuntime:
    pytest.importorskip("torch")
    from medvlm.runtime import TransformersRuntime
    from medvlm.tiny import init_tiny_checkpoint

    path: Path = init_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llava"))
    runtime: VisionLanguageRuntime = TransformersRuntime(path, device="cpu", max_new_tokens=8)
    return runtime


def test_end_to_end_with_the_tiny_checkpoint(tiny_runtime: VisionLanguageRuntime) -> None:
    config = CheckerConfig(max_verify_prompts=2, max_new_tokens=8)
    checker = Checker(runtime=tiny_runtime, config=config)
    image = (np.arange(96 * 80, dtype=np.uint32).reshape(96, 80) % 251).astype(np.uint8)
    first = checker.check(REPORT, image=image)
    second = checker.check(REPORT, image=image)
    ids = [a.prompt_id for a in first.model_answers]
    assert ids[:3] == [SIMPLE_ERROR_CHECK.id, COMPLEX_ERROR_CHECK.id,
                       GENERATE_FINDINGS_WITH_INDICATION.id]  # fmt: skip
    assert ids.count(VERIFY_FINDING.id) == 2
    # random weights: answers are noise, but parsing is strict and the run is deterministic
    for answer in first.model_answers:
        assert answer.error is None
        assert (
            answer.parsed is None
            or answer.prompt_id.startswith("generate")
            or (answer.parsed in {"Y", "N", "A", "B", "C", "D", "yes", "no"})
        )
    assert [a.raw_text for a in first.model_answers] == [a.raw_text for a in second.model_answers]
    assert first.provenance["model_id"] == tiny_runtime.model_id
    json.dumps(first.to_dict())
