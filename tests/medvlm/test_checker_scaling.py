"""The checker's work grows about linearly with the report's length (issue 16.1).

Work is measured as the number of Python function calls made while parsing and checking (a
deterministic count, not a time): the old pairing loops were cubic (a 43.6 K-character report took
83 s), so doubling the length multiplied the work by about eight. The report is built by repeating
realistic sentences that contradict each other (sides, grades, presence), which is the worst case
for the pairing rules, in three shapes: sentences with periods, one run-on sentence, and lines
without periods.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from medvlm.checking import Checker

_FINDINGS = (
    "There is a small left pleural effusion",
    "No pneumothorax is seen",
    "Mild cardiomegaly",
    "Right lower lobe consolidation",
    "Moderate right basilar atelectasis",
    "A right PICC line ends in the SVC",
    "Left lung nodule measures 8 mm",
    "The lungs are otherwise clear",
)
_IMPRESSION = (
    "Small right pleural effusion",
    "Right pneumothorax",
    "Severe cardiomegaly",
    "Left lower lobe consolidation",
    "Nodule of 15 mm",
    "No acute cardiopulmonary disease",
)


def long_report(chars: int, joiner: str) -> str:
    """About ``chars`` characters: 60% findings, 40% impression, sentences joined by ``joiner``."""

    def fill(sentences: tuple[str, ...], budget: float) -> str:
        out: list[str] = []
        size = 0
        i = 0
        while size < budget:
            out.append(sentences[i % len(sentences)])
            size += len(out[-1]) + len(joiner)
            i += 1
        return joiner.join(out)

    return f"FINDINGS: {fill(_FINDINGS, chars * 0.6)}\nIMPRESSION: {fill(_IMPRESSION, chars * 0.4)}"


def _calls(fn: Callable[[], Any]) -> int:
    count = 0

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()


@pytest.mark.parametrize("joiner", [". ", " and ", "\n"], ids=["sentences", "run-on", "lines"])
def test_work_is_near_linear_in_report_length(checker: Checker, joiner: str) -> None:
    small = long_report(25_000, joiner)
    large = long_report(50_000, joiner)
    checker.check(checker.parse(small))  # warm caches (regex compilation, KB lookups)
    work_small = _calls(lambda: checker.check(checker.parse(small)))
    work_large = _calls(lambda: checker.check(checker.parse(large)))
    ratio = work_large / work_small
    # linear: ~2.0; the old quadratic-to-cubic loops gave 4 to 8
    assert ratio < 2.6, f"work grew {ratio:.2f}x for 2x the length ({work_small} -> {work_large})"


def test_long_report_is_still_checked(checker: Checker) -> None:
    """The bounds do not switch the checker off: a long report's contradictions are still flagged,
    on both sides of each pair, and every flag points into the report."""
    text = long_report(50_000, ". ")
    result = checker.check(checker.parse(text))
    rules = {f.rule_id for f in result.flags}
    assert {
        "text.laterality.findings_impression",
        "text.severity.findings_impression",
        "text.presence.contradiction",
    } <= rules
    assert result.verdict_simple == "Y"
    assert all(f.section in ("findings", "impression") for f in result.flags)
