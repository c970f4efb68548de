"""The misreadings of issue 12.2, one group per pattern, with cases written for this file.

Each case is a (FINDINGS, IMPRESSION) pair and whether the checker must flag it (verdict "Y");
where it must flag, the rule family expected. Cases vary wording, order and section on purpose.
"""

from __future__ import annotations

import pytest

from medvlm.checking import Checker
from medvlm.reports import ParsedReport, Presence, SectionName


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()


def _check(checker: Checker, findings: str, impression: str) -> tuple[str, set[str]]:
    parsed = ParsedReport.from_sections(findings=findings, impression=impression)
    result = checker.check(parsed)
    return result.verdict_simple, {f.rule_id for f in result.flags}


def _presence(text: str, concept: str) -> list[Presence]:
    parsed = ParsedReport.from_sections(findings=text)
    section = parsed.section(SectionName.FINDINGS)
    assert section is not None
    return [m.presence for _, m in section.mentions() if m.concept == concept]


# 1. a hedge on the interpretation does not hedge the observation before it ---------------------
@pytest.mark.parametrize(
    ("text", "concept", "expected"),
    [
        ("Dense right basilar consolidation, probably aspiration.", "consolidation", "present"),
        ("Marked cardiomegaly, may reflect early edema.", "cardiomegaly", "present"),
        ("Marked cardiomegaly, may reflect early edema.", "edema", "uncertain"),
        ("Left lower lobe opacity may represent atelectasis.", "lung_opacity", "present"),
        ("Streaky opacity at the left base, likely atelectasis.", "lung_opacity", "present"),
        ("No focal opacity to suggest pneumonia.", "pneumonia", "absent"),
        ("No focal opacity to suggest pneumonia.", "lung_opacity", "absent"),
        ("There is no consolidation suggestive of pneumonia.", "pneumonia", "absent"),
        ("Pneumonia is likely.", "pneumonia", "uncertain"),
        ("Possible small left effusion.", "pleural_effusion", "uncertain"),
    ],
)
def test_hedge_scope(text: str, concept: str, expected: str) -> None:
    assert _presence(text, concept)[0].value == expected


# 2. a flat denial against a hedged diagnosis ----------------------------------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "flag"),
    [
        ("There is no emphysema.", "Overexpanded lungs, probably emphysema.", True),
        ("No pleural effusion.", "Blunting of the left costophrenic angle, likely effusion.", True),
        ("Suspected right pneumothorax.", "No pneumothorax.", True),
        ("Findings may represent pulmonary edema.", "No edema.", True),
        # weak hedges only leave the finding open: not set against a denial
        ("No pneumonia.", "Pneumonia cannot be excluded.", False),
        ("No focal infiltrate.", "Atelectasis versus early infiltrate at the right base.", False),
        ("Rule out pneumonia. The lungs are clear.", "No pneumonia.", False),
        # a blanket normal phrase is not set against a hedge
        ("The lungs are clear.", "Possible mild bronchitis or early infiltrate.", False),
    ],
)
def test_denial_against_hedge(checker: Checker, findings: str, impression: str, flag: bool) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert (verdict == "Y") is flag, rules
    if flag:  # merged with a plain contradiction when the sentence also asserts the finding
        assert rules & {"text.presence.denial_vs_hedge", "text.presence.contradiction"}


# 3. qualified and redacted denials (policy in docs/eval.md) -------------------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "flag"),
    [
        ("Small left apical pneumothorax.", "No acute pneumothorax.", True),  # always acute
        ("Moderate right effusion.", "No XXXX effusion.", False),  # the redaction may be "left"
        ("Moderate right pleural effusion.", "No large pleural effusion.", False),
        ("Large right pleural effusion.", "No large pleural effusion.", True),
        ("Right lower lobe consolidation.", "No new consolidation.", False),
        ("New right lower lobe consolidation.", "No new consolidation.", True),
        ("XXXX atelectasis at the right base.", "There is no atelectasis.", True),
        ("XXXX opacity at the right base.", "The lungs are clear.", False),
    ],
)
def test_qualified_denials(checker: Checker, findings: str, impression: str, flag: bool) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert (verdict == "Y") is flag, rules


# 4. the same process under different names, the grade on the right noun ------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "flag"),
    [
        ("Patchy airspace disease at both bases.", "Bibasilar opacities.", False),
        ("Linear basal opacities, probably atelectasis.", "Bibasilar atelectasis.", False),
        ("A noncalcified nodule in the right upper lobe.", "No nodule.", True),
        ("There is no consolidation.", "Right lower lobe airspace disease.", True),
        ("Mild cardiomegaly with a large hiatal hernia.", "Mild cardiomegaly.", False),
        ("Severe cardiomegaly.", "Mild enlargement of the cardiac silhouette.", True),
        # "density" for "opacity" (Fleischner glossary); bone and soft-tissue densities are not
        (
            "Rounded density in the left upper lobe.",
            "Rounded opacity in the right upper lobe.",
            True,
        ),
        ("Ill-defined density at the left base.", "Left basilar opacity.", False),
        ("Patchy densities in the right upper lung.", "The lungs are clear.", True),
        ("Decreased bone density. Lungs are clear.", "No acute cardiopulmonary process.", False),
        ("Soft tissue density over the left apex.", "No pulmonary opacity.", False),
    ],
)
def test_synonyms_and_grades(checker: Checker, findings: str, impression: str, flag: bool) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert (verdict == "Y") is flag, rules


# 5. "no acute disease" against significant findings; contradictions inside FINDINGS -----------
@pytest.mark.parametrize(
    "finding",
    [
        "There is complete collapse of the left lower lobe.",
        "Right upper lobe collapse.",
        "The trachea is deviated to the right.",
        "There is mediastinal shift to the left.",
        "The cardiac silhouette is enlarged with pulmonary vascular congestion.",
        "There is a 5 cm mass in the left upper lobe.",
        "Displaced fracture of the left 7th rib.",
        "Kerley B lines at both bases.",
        "There are septal lines at the right base.",
    ],
)
def test_no_acute_disease_contradicted(checker: Checker, finding: str) -> None:
    verdict, rules = _check(
        checker, f"The lungs are otherwise clear. {finding}", "No acute disease."
    )
    assert verdict == "Y", rules


def test_contradiction_inside_findings(checker: Checker) -> None:
    verdict, rules = _check(
        checker,
        "Heart size is at the upper limit of normal. The cardiac silhouette is enlarged.",
        "Stable chest.",
    )
    assert verdict == "Y", rules


# 6. relational sides ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "flag"),
    [
        (
            "Bilateral pleural effusions, left larger than right.",
            "Bilateral effusions, right greater than left.",
            True,
        ),
        (
            "Bilateral effusions, right more than left.",
            "Bilateral pleural effusions, larger on the right.",
            False,
        ),
        (
            "Small bilateral effusions, left greater than right.",
            "Small bilateral pleural effusions, left greater than right.",
            False,
        ),
    ],
)
def test_relational_sides(checker: Checker, findings: str, impression: str, flag: bool) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert (verdict == "Y") is flag, rules


# 7. several findings on both sides do not hide a real side conflict ---------------------------
def test_side_conflict_among_several(checker: Checker) -> None:
    verdict, rules = _check(
        checker,
        "Right lower lobe consolidation. Mild right basilar atelectasis.",
        "Left lower lobe consolidation.",
    )
    assert verdict == "Y" and "text.laterality.findings_impression" in rules


def test_two_real_sides_are_not_a_conflict(checker: Checker) -> None:
    verdict, rules = _check(
        checker,
        "Right lower lobe consolidation. Left lower lobe consolidation.",
        "Bilateral lower lobe consolidation, right worse than left.",
    )
    assert verdict == "N", rules


# 8. historical and resolved mentions keep their side ----------------------------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "flag"),
    [
        ("The left pneumothorax has resolved.", "Resolution of the right pneumothorax.", True),
        ("The right pneumothorax has resolved.", "Resolution of the right pneumothorax.", False),
        ("Interval resolution of the left effusion.", "The right effusion has cleared.", True),
    ],
)
def test_resolved_sides(checker: Checker, findings: str, impression: str, flag: bool) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert (verdict == "Y") is flag, rules


# 9. ranges and sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "flag"),
    [
        ("Moderate to large right effusion.", "Small to moderate right effusion.", False),
        ("Moderate to large right effusion.", "Trace right effusion.", True),
        ("A large 7 mm nodule in the left upper lobe.", "7 mm left upper lobe nodule.", False),
        ("Small right pleural effusion.", "Large right pleural effusion.", True),
    ],
)
def test_ranges(checker: Checker, findings: str, impression: str, flag: bool) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert (verdict == "Y") is flag, rules


# 10. segmentation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "FINDINGS: Small left effusion.No pneumothorax.\nIMPRESSION: Small right effusion.",
        "FINDINGS: Small left effusion; no pneumothorax.\nIMPRESSION: Small right effusion.",
        "FINDINGS:\nSmall left effusion\nNo pneumothorax\nIMPRESSION:\nSmall right effusion",
    ],
    ids=["no-space", "semicolon", "line-breaks"],
)
def test_segmentation(checker: Checker, text: str) -> None:
    parsed = checker.parse(text)
    findings = parsed.section(SectionName.FINDINGS)
    assert findings is not None and len(findings.sentences) == 2
    result = checker.check(parsed)
    assert {f.rule_id for f in result.flags} == {"text.laterality.findings_impression"}


def test_wrapped_lines_are_not_cut(checker: Checker) -> None:
    text = "FINDINGS:\n There is a small left pleural effusion with\n Adjacent atelectasis.\n"
    parsed = checker.parse(text)
    findings = parsed.section(SectionName.FINDINGS)
    assert findings is not None and len(findings.sentences) == 1


# 11. false flags to avoid -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("findings", "impression"),
    [
        (
            "A right internal jugular line ends in the SVC. A left subclavian line ends in the "
            "brachiocephalic vein.",
            "Right IJ central line in the SVC.",
        ),
        (
            "The right chest tube has been removed. A left chest tube remains in place.",
            "Left chest tube in place; right chest tube removed.",
        ),
        (
            "Bilateral perihilar opacities.",
            "No clear cause for the perihilar opacities; edema is possible.",
        ),
        (
            "The endotracheal tube has been removed. The enteric tube is in the stomach.",
            "Extubated. Enteric tube in the stomach.",
        ),
    ],
)
def test_no_false_flags(checker: Checker, findings: str, impression: str) -> None:
    verdict, rules = _check(checker, findings, impression)
    assert verdict == "N", rules


# issue 12.4: suggested corrections, both readings, never applied ---------------------------------
@pytest.mark.parametrize(
    ("findings", "impression", "first", "second"),
    [
        (
            "Small left pleural effusion.",
            "Small right pleural effusion.",
            "Small right pleural effusion.",
            "Small left pleural effusion.",
        ),
        (
            "Severe cardiomegaly.",
            "Mild cardiomegaly.",
            "Mild cardiomegaly.",
            "Severe cardiomegaly.",
        ),
        (
            "Bilateral effusions, left larger than right.",
            "Bilateral effusions, right greater than left.",
            "Bilateral effusions, right larger than left.",
            "Bilateral effusions, left greater than right.",
        ),
    ],
)
def test_suggestions_offer_both_readings(
    checker: Checker, findings: str, impression: str, first: str, second: str
) -> None:
    parsed = ParsedReport.from_sections(findings=findings, impression=impression)
    result = checker.check(parsed)
    flag = result.flags[0]
    suggestions = flag.suggestions
    assert [s["section"] for s in suggestions] == ["findings", "impression"]
    assert suggestions[0]["suggested"] == first
    assert suggestions[1]["suggested"] == second
    assert all(s["applied"] is False for s in suggestions)
    assert flag.to_dict()["suggestions"] == suggestions
    # never applied: the parsed report is unchanged
    assert parsed.text_of("findings") == findings


def test_presence_suggestion_names_both_sentences(checker: Checker) -> None:
    result = checker.check(
        ParsedReport.from_sections(
            findings="No pneumothorax.", impression="Small right pneumothorax."
        )
    )
    changes = [s["change"] for s in result.flags[0].suggestions]
    assert changes == [
        "presence: state it present (as impression sentence 1)",
        "presence: state it absent (as findings sentence 1)",
    ]
