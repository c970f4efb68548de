"""Report parsing: sections, sentences with spans, mentions (assertion, side, zone, grade, ...)."""

from __future__ import annotations

import pytest

from medvlm.reports import (
    Mention,
    ParsedReport,
    Presence,
    ReportParseError,
    SectionName,
    Side,
    parse_report,
)

MIMIC = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever

 COMPARISON:  ___

 FINDINGS:

 The lungs are clear.  There is a small left pleural effusion, which is
 new since ___.  No pneumothorax.  Heart size is normal.

 IMPRESSION:

 1.  Small left pleural effusion.
 2.  No pneumonia.
"""


def mentions(text: str, section: SectionName = SectionName.FINDINGS) -> list[Mention]:
    report = ParsedReport.from_sections(**{section.value: text})
    sec = report.section(section)
    assert sec is not None
    return [m for _, m in sec.mentions()]


def only(text: str, concept: str) -> Mention:
    found = [m for m in mentions(text) if m.concept == concept]
    assert len(found) == 1, found
    return found[0]


def test_mimic_raw_text_sections_and_numbered_impression() -> None:
    report = parse_report(MIMIC)
    assert set(report.sections) == {
        SectionName.TECHNIQUE,
        SectionName.INDICATION,
        SectionName.COMPARISON,
        SectionName.FINDINGS,
        SectionName.IMPRESSION,
    }
    findings = report.section(SectionName.FINDINGS)
    assert findings is not None
    assert [s.text for s in findings.sentences] == [
        "The lungs are clear.",
        "There is a small left pleural effusion, which is new since ___.",
        "No pneumothorax.",
        "Heart size is normal.",
    ]
    impression = report.section(SectionName.IMPRESSION)
    assert impression is not None
    assert [s.text for s in impression.sentences] == [
        "Small left pleural effusion.",
        "No pneumonia.",
    ]
    for section in report.sections.values():
        for s in section.sentences:
            assert section.text[s.start : s.end] == s.text


def test_iu_style_sections_with_redactions() -> None:
    report = ParsedReport.from_sections(
        findings="Heart size normal. Lungs are clear. XXXX are normal. No pneumonia, effusions, "
        "edema, pneumothorax, adenopathy, nodules or masses.",
        impression="Normal chest",
        indication="XXXX-year-old female with chest pain.",
        comparison="None.",
    )
    assert report.text_of("comparison") == "None."
    findings = report.section(SectionName.FINDINGS)
    assert findings is not None and len(findings.sentences) == 4
    absent = {m.concept for _, m in findings.mentions() if m.presence is Presence.ABSENT}
    assert {"cardiomegaly", "lung_opacity", "pneumonia", "pleural_effusion", "edema"} <= absent
    assert {"pneumothorax", "lymphadenopathy", "lung_lesion"} <= absent
    impression = mentions("Normal chest", SectionName.IMPRESSION)
    assert [(m.concept, m.presence) for m in impression] == [("normal_study", Presence.ABSENT)]


def test_headerless_text_is_findings_and_impression_only_report() -> None:
    assert set(parse_report("No acute disease.").sections) == {SectionName.FINDINGS}
    report = parse_report("IMPRESSION: 1. No acute cardiopulmonary process. 2. Cardiomegaly.")
    assert set(report.sections) == {SectionName.IMPRESSION}
    impression = report.section(SectionName.IMPRESSION)
    assert impression is not None
    assert [s.text for s in impression.sentences] == [
        "No acute cardiopulmonary process.",
        "Cardiomegaly.",
    ]


def test_wrapped_lines_and_abbreviations() -> None:
    report = parse_report("FINDINGS: Dr. ___ was called at 2.5 p.m. about the\nright pneumothorax.")
    findings = report.section(SectionName.FINDINGS)
    assert findings is not None
    assert len(findings.sentences) == 1
    assert findings.sentences[0].mentions[0].laterality is Side.RIGHT


@pytest.mark.parametrize(
    ("text", "concept", "presence"),
    [
        ("No pneumothorax.", "pneumothorax", Presence.ABSENT),
        ("There is no evidence of pleural effusion.", "pleural_effusion", Presence.ABSENT),
        ("Pneumothorax is not seen.", "pneumothorax", Presence.ABSENT),
        ("Lungs are clear without focal consolidation.", "consolidation", Presence.ABSENT),
        ("The right effusion has resolved.", "pleural_effusion", Presence.ABSENT),
        ("Small right pneumothorax.", "pneumothorax", Presence.PRESENT),
        ("Opacity which may represent pneumonia.", "pneumonia", Presence.UNCERTAIN),
        ("Cannot exclude early pneumonia.", "pneumonia", Presence.UNCERTAIN),
        ("Pneumonia is not excluded.", "pneumonia", Presence.UNCERTAIN),
        ("Non-displaced fracture of the left 6th rib.", "fracture", Presence.PRESENT),
        ("No change in the right pleural effusion.", "pleural_effusion", Presence.PRESENT),
        ("Heart size is normal.", "cardiomegaly", Presence.ABSENT),
        ("The heart is mildly enlarged.", "cardiomegaly", Presence.PRESENT),
    ],
)
def test_assertion(text: str, concept: str, presence: Presence) -> None:
    assert only(text, concept).presence is presence


def test_negation_scope_ends_at_but() -> None:
    found = {m.concept: m.presence for m in mentions("No effusion but there is a pneumothorax.")}
    assert found == {"pleural_effusion": Presence.ABSENT, "pneumothorax": Presence.PRESENT}


def test_history_is_marked() -> None:
    assert only("History of pneumothorax.", "pneumothorax").historical


def test_side_zone_grade_measure_interval_device() -> None:
    m = only("Increased 2.5 cm nodule in the right upper lobe.", "lung_lesion")
    assert m.laterality is Side.RIGHT
    assert m.zones == frozenset({"upper"}) and m.location == "upper"
    assert m.measurement is not None and m.measurement.value_mm == 25.0
    assert m.interval == "worse"
    eff = only("Moderate to large bilateral pleural effusions.", "pleural_effusion")
    assert eff.laterality is Side.BILATERAL
    assert eff.grades == frozenset({2, 3})
    assert only("Bibasilar atelectasis.", "atelectasis").laterality is Side.BILATERAL
    line = only("Right IJ central venous catheter tip in the SVC.", "central_line")
    assert line.device and line.laterality is Side.RIGHT
    pair = mentions("Small right pleural effusion and left basilar atelectasis.")
    assert [(m.concept, m.laterality) for m in pair] == [
        ("pleural_effusion", Side.RIGHT),
        ("atelectasis", Side.LEFT),
    ]
    both = only("Opacities in the right upper and left lower lobes.", "lung_opacity")
    assert both.laterality is Side.BILATERAL
    pacer = only("Pacemaker with leads in the right atrium and right ventricle.", "pacemaker")
    assert pacer.laterality is None


def test_mention_spans_index_the_section_text() -> None:
    report = ParsedReport.from_sections(findings="Heart normal. Small left pneumothorax.")
    section = report.section(SectionName.FINDINGS)
    assert section is not None
    for _, m in section.mentions():
        assert section.text[m.start : m.end] == m.text


def test_parse_errors_name_the_problem() -> None:
    with pytest.raises(ReportParseError, match="must be a string"):
        parse_report(42)  # type: ignore[arg-type]
    with pytest.raises(ReportParseError, match="one report at a time"):
        parse_report("No pneumothorax. " * 10_000)
    assert parse_report("   ").sections == {}


def test_to_dict_is_json() -> None:
    import json

    json.dumps(parse_report(MIMIC).to_dict())
