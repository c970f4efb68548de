"""The yardstick's injector (eval.contradictions) and layouts, on reports written for this file."""

from __future__ import annotations

import random

from eval.contradictions import HEADLINE_PATTERNS, cases_for, choose_case, facts_of, yardstick_split
from eval.layouts import LAYOUTS, render
from eval.records import ReportRecord
from eval.yardstick import load_icu_fixtures, run_yardstick, wilson

FINDINGS = (
    "There is a small left pleural effusion. No pneumothorax. Mild cardiomegaly. "
    "Right lower lobe consolidation."
)
IMPRESSION = "Small left pleural effusion. Right lower lobe consolidation. No pneumothorax."


def _cases() -> list:
    return cases_for("r1", FINDINGS, IMPRESSION, ("Pleural Effusion/left/small",), random.Random(0))


def test_every_pattern_has_a_counterpart_and_a_changed_text() -> None:
    cases = _cases()
    patterns = {c.pattern for c in cases}
    assert {"laterality", "severity", "negation_to_absent", "negation_to_present"} <= patterns
    for c in cases:
        assert c.counterpart
        assert (c.findings, c.impression) != (FINDINGS, IMPRESSION)
        if c.pattern != "removed":
            text = c.findings if c.section == "findings" else c.impression
            assert c.modified in text


def test_side_swap_changes_every_side_word_of_the_sentence() -> None:
    cases = cases_for(
        "r2",
        "Streaky left basilar opacities and blunting of the left costophrenic angle.",
        "Left basilar opacities.",
    )
    swaps = [c for c in cases if c.pattern == "laterality" and c.operator == "swap_word"]
    assert swaps and all("left" not in c.modified.lower() for c in swaps if c.section == "findings")


def test_mesh_tags_confirm_cases() -> None:
    cases = _cases()
    effusion = [c for c in cases if c.concept == "effusion"]
    assert effusion and all(c.mesh_confirmed for c in effusion)
    assert not any(c.mesh_confirmed for c in cases if c.concept == "cardiomegaly")


def test_statuses_from_own_cue_lists() -> None:
    facts = facts_of(
        "findings",
        ["No pneumothorax.", "Opacity, probably atelectasis.", "Pneumonia is not excluded."],
    )
    status = {f.concept: f.status for f in facts}
    assert status == {"pneumothorax": "denied", "opacity": "hedged", "atelectasis": "hedged",
                      "pneumonia": "hedged"}  # fmt: skip


def test_normal_impression_gives_significant_inserts() -> None:
    cases = cases_for(
        "r3", "The lungs are clear. No pneumothorax.", "No acute cardiopulmonary disease."
    )
    kinds = {c.operator for c in cases if c.pattern == "insert_vs_normal"}
    assert {"insert_collapse", "insert_shift", "insert_mass", "insert_fracture"} <= kinds
    assert any(c.pattern == "negation_to_present" for c in cases)


def test_choice_is_seeded_and_split_is_stable() -> None:
    a = choose_case([c for c in _cases() if c.pattern in HEADLINE_PATTERNS], random.Random(5))
    b = choose_case([c for c in _cases() if c.pattern in HEADLINE_PATTERNS], random.Random(5))
    assert a == b
    splits = [yardstick_split(f"CXR{i}") for i in range(2000)]
    assert 0.25 < splits.count("test") / len(splits) < 0.35
    assert yardstick_split("CXR1") == yardstick_split("CXR1")


def test_layouts_keep_the_text() -> None:
    for name in LAYOUTS:
        rendered = render(name, FINDINGS, IMPRESSION, "Cough.", "None.")
        text = rendered.text if rendered.text is not None else rendered.findings or ""
        assert "pleural" in text.lower()
    assert "\n" in (render("mimic_wrapped", FINDINGS * 3, IMPRESSION).text or "")
    assert "effusion.No" in (render("no_space_after_period", FINDINGS, IMPRESSION).text or "")
    assert " 1. " in (render("mimic_numbered_impression", FINDINGS, IMPRESSION).text or "")


def test_wilson_interval() -> None:
    lo, hi = wilson(95, 100)
    assert lo < 0.95 < hi and lo > 0.88 and hi < 0.99
    assert wilson(0, 0) == (0.0, 1.0)


def test_yardstick_on_written_reports_and_icu_fixtures() -> None:
    records = [ReportRecord(id=f"w{i}", findings=FINDINGS, impression=IMPRESSION) for i in range(6)]
    result = run_yardstick(records, split="all", icu=load_icu_fixtures())
    assert result["reports"] == 6
    assert result["clean_flagged"]["iu_style"]["rate"] == 0.0
    assert result["injected"]["overall"]["caught"]["n"] == 6 * len(LAYOUTS)
    assert result["injected"]["overall"]["caught"]["rate"] >= 0.9
    icu = result["icu_fixtures"]
    assert icu["reports"] >= 7
    assert icu["clean_flagged"]["k"] == 0, icu["clean_flagged_ids"]
