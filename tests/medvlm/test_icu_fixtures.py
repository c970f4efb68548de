"""Hand-written ICU-style raw reports (tests/fixtures/icu_reports): several devices on both sides,
removed tubes, dominant-side bilateral findings. Clean as written; one edit makes each wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.checking import Checker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "icu_reports"
REPORTS = sorted(FIXTURES.glob("*.txt"))


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()


def test_there_are_several() -> None:
    assert len(REPORTS) >= 7


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_clean_icu_report_is_not_flagged(checker: Checker, path: Path) -> None:
    result = checker.check(checker.parse(path.read_text()))
    assert result.verdict_simple == "N", [f.message for f in result.flags]


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("icu_01_lines_and_tubes", "2. Moderate bilateral pleural effusions, larger on the right",
         "2. Moderate bilateral pleural effusions, larger on the left"),
        ("icu_03_chest_tubes", "Tiny left apical pneumothorax, unchanged, with",
         "Tiny right apical pneumothorax, unchanged, with"),
        ("icu_04_edema", "Moderate pulmonary edema and small", "No pulmonary edema. Small"),
        ("icu_05_pacer_and_lines", "2. Right lower lobe consolidation", "2. Left lower lobe consolidation"),
        ("icu_06_resolved_ptx", "Resolution of the left pneumothorax", "Resolution of the right pneumothorax"),
    ],
)  # fmt: skip
def test_one_edit_is_caught(checker: Checker, name: str, old: str, new: str) -> None:
    text = (FIXTURES / f"{name}.txt").read_text()
    assert old in text
    result = checker.check(checker.parse(text.replace(old, new)))
    assert result.verdict_simple == "Y"
