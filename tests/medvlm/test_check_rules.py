"""Text and header rules, fusion and the public result types, on reports written for the tests."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from dicom_io import parse_age
from medvlm.checking import (
    Checker,
    CheckerConfig,
    CheckerConfigError,
    CheckerInputError,
    CheckResult,
    Flag,
    HeaderFacts,
)
from medvlm.errors import MedVLMError
from medvlm.reports import ParsedReport, parse_report
from medvlm.taxonomy import ComplexClass, ErrorSubtype, FlagSource, Severity

CLEAN = [
    (
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
        "No pleural effusion or pneumothorax.",
        "No acute cardiopulmonary abnormality.",
    ),
    (
        "Mild cardiomegaly. Small right pleural effusion with right basilar atelectasis. "
        "No pneumothorax. Left lung is clear.",
        "1. Mild cardiomegaly. 2. Small right pleural effusion and atelectasis.",
    ),
    (
        "Heart size is normal. There is no focal airspace disease. Streaky bibasilar opacities "
        "likely atelectasis. No large pleural effusion. Trace left pleural effusion.",
        "No acute cardiopulmonary process. Bibasilar atelectasis.",
    ),
    (
        "Right lower lobe consolidation. Lungs are otherwise clear. No pneumothorax. Stable "
        "calcified granuloma in the left upper lobe.",
        "Right lower lobe pneumonia.",
    ),
    (
        "Cardiomegaly. Calcified granulomas. Degenerative changes of the thoracic spine.",
        "No acute cardiopulmonary abnormality. Stable cardiomegaly.",
    ),
    (
        "Right internal jugular central venous catheter with tip in the SVC. No pneumothorax.",
        "Right IJ line tip in the SVC. No pneumothorax.",
    ),
]


MIMIC_CLEAN = [
    """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  ___F with cough, eval for pneumonia
 TECHNIQUE:  Chest PA and lateral
 COMPARISON:  ___
 FINDINGS:
 The lungs are clear without focal consolidation.  No pleural effusion or
 pneumothorax is seen.  The cardiac and mediastinal silhouettes are
 unremarkable.
 IMPRESSION:
 No acute cardiopulmonary process.
""",
    """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 INDICATION:  ___ year old man with CHF, intubated
 COMPARISON:  Chest radiograph from ___.
 FINDINGS:
 Endotracheal tube terminates 4.5 cm above the carina.  Enteric tube courses
 below the diaphragm with the tip out of view.  Right internal jugular
 central venous catheter ends in the mid SVC.  Moderate cardiomegaly is
 unchanged.  There is mild pulmonary vascular congestion.  Small bilateral
 pleural effusions with adjacent atelectasis.  No pneumothorax.
 IMPRESSION:
 1.  Lines and tubes in standard position.
 2.  Mild pulmonary vascular congestion and small bilateral pleural effusions.
""",
    """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  History: ___M with chest pain
 COMPARISON:  None.
 FINDINGS:
 Heart size is normal.  The aorta is tortuous.  The lungs are hyperinflated
 but clear.  There is no pleural effusion or pneumothorax.  Degenerative
 changes are noted in the thoracic spine.
 IMPRESSION:
 No acute cardiopulmonary abnormality.  Hyperinflation.
""",
    """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 INDICATION:  ___ year old woman s/p right VATS, evaluate for pneumothorax
 COMPARISON:  ___ at 06:10
 FINDINGS:
 A right-sided chest tube remains in place.  Small right apical pneumothorax
 is slightly smaller.  No left pneumothorax.  Right pleural effusion has
 nearly resolved.  Left lung is clear.
 IMPRESSION:
 1.  Decreased small right apical pneumothorax with chest tube in place.
 2.  Small right pleural effusion, decreased.
""",
    """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  ___ with fever
 COMPARISON:  ___
 FINDINGS:
 There is a new right lower lobe opacity concerning for pneumonia.  The left
 lung is clear.  No pleural effusion.  Heart size is normal.
 IMPRESSION:
 Right lower lobe pneumonia.  Followup radiographs after treatment are
 recommended to document resolution.
 NOTIFICATION:  The findings were discussed with Dr. ___ by Dr. ___ on the
 telephone on ___ at 2:10 PM.
""",
    """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  ___M with shortness of breath
 COMPARISON:  ___
 FINDINGS:
 Cardiomediastinal silhouette is within normal limits.  There is a 7 mm
 nodule in the left upper lobe, not seen on the prior exam.  No focal
 consolidation, effusion, or pneumothorax.
 IMPRESSION:
 7 mm left upper lobe nodule, new since ___.  Recommend CT for further
 evaluation.
""",
    """                                 FINAL REPORT
 WET READ: ___ ___ ___ 9:15 PM
  No acute process.
 EXAMINATION:  CHEST (PORTABLE AP)
 INDICATION:  ___F with hypoxia
 FINDINGS:
 Low lung volumes.  Bibasilar opacities likely reflect atelectasis, though
 infection cannot be excluded.  No large pleural effusion.  No pneumothorax.
 Heart size is top normal.
 IMPRESSION:
 Low lung volumes with bibasilar atelectasis; infection not excluded.
""",
]


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker()


def check(checker: Checker, findings: str, impression: str | None = None, **kw: str) -> CheckResult:
    report = ParsedReport.from_sections(findings=findings, impression=impression, **kw)
    return checker.check(report)


def the_flag(result: CheckResult, subtype: ErrorSubtype) -> Flag:
    found = [f for f in result.flags if f.subtype is subtype]
    assert len(found) == 1, [f.to_dict() for f in result.flags]
    return found[0]


@pytest.mark.parametrize(("findings", "impression"), CLEAN)
def test_clean_reports_get_no_flag(checker: Checker, findings: str, impression: str) -> None:
    result = check(checker, findings, impression)
    assert result.flags == (), [f.message for f in result.flags]
    assert result.verdict_simple == "N"
    assert result.verdict_complex is ComplexClass.ORIGINAL


def test_side_flip_points_at_the_findings_sentence(checker: Checker) -> None:
    result = check(checker, "Heart normal. Small left pneumothorax.", "Small right pneumothorax.")
    flag = the_flag(result, ErrorSubtype.LATERALITY)
    assert (flag.section, flag.sentence_index) == ("findings", 1)
    assert flag.severity is Severity.CRITICAL  # side of a pneumothorax
    assert flag.source is FlagSource.TEXT_RULE
    assert flag.evidence["contradicts"]["text"] == "Small right pneumothorax."
    assert "left" in flag.message and "right" in flag.message
    assert result.verdict_simple == "Y" and result.verdict_complex is ComplexClass.SUBSTITUTE


def test_side_of_a_line_is_critical(checker: Checker) -> None:
    result = check(checker, "Left IJ central line tip in the SVC.", "Right IJ central line in SVC.")
    assert the_flag(result, ErrorSubtype.LATERALITY).severity is Severity.CRITICAL


def test_both_sides_in_findings_is_not_a_side_flip(checker: Checker) -> None:
    result = check(
        checker,
        "Small right pleural effusion. Trace left pleural effusion.",
        "Small right pleural effusion.",
    )
    assert result.flags == ()


def test_majority_vote_points_at_the_odd_sentence(checker: Checker) -> None:
    result = check(
        checker,
        "Left lower lobe consolidation. Patchy left lower lobe opacity.",
        "Right lower lobe pneumonia.",
    )
    flag = the_flag(result, ErrorSubtype.LATERALITY)  # two pairs, one flag after fusion
    assert (flag.section, flag.sentence_index) == ("impression", 0)


@pytest.mark.parametrize(
    ("findings", "impression", "index"),
    [
        ("The lungs are clear. There is pneumothorax.", "No pneumothorax.", 1),
        ("Cardiomegaly. No pleural effusion.", "Heart size is normal.", 0),
        ("No pleural effusion. Heart normal.", "Moderate right pleural effusion.", 0),
    ],
)
def test_presence_contradictions(
    checker: Checker, findings: str, impression: str, index: int
) -> None:
    flag = the_flag(check(checker, findings, impression), ErrorSubtype.NEGATION)
    assert (flag.section, flag.sentence_index) == ("findings", index)
    assert flag.confidence >= 0.8


def test_finding_the_impression_calls_normal(checker: Checker) -> None:
    result = check(
        checker,
        "Heart size normal. There is a small left pleural effusion. No pneumothorax.",
        "No acute cardiopulmonary abnormality.",
    )
    flag = the_flag(result, ErrorSubtype.INSERT_FINDING)
    assert (flag.section, flag.sentence_index) == ("findings", 1)
    assert result.verdict_complex is ComplexClass.INSERT
    normal = check(checker, "The heart is moderately enlarged.", "Normal chest.")
    assert the_flag(normal, ErrorSubtype.INSERT_FINDING).concept == "cardiomegaly"


def test_chronic_or_trace_findings_do_not_contradict_no_acute(checker: Checker) -> None:
    result = check(
        checker,
        "Stable chronic right pleural effusion. Trace left effusion.",
        "No acute cardiopulmonary abnormality.",
    )
    assert result.flags == ()


def test_qualified_denials_leave_room(checker: Checker) -> None:
    assert check(checker, "No large pleural effusion.", "Small left pleural effusion.").flags == ()
    assert check(checker, "No new consolidation.", "Right lower lobe consolidation.").flags == ()
    assert check(checker, "Lungs are otherwise clear.", "Right lower lobe pneumonia.").flags == ()
    assert check(checker, "No displaced rib fracture.", "Old left rib fracture.").flags == ()


def test_inside_section_contradiction(checker: Checker) -> None:
    result = check(checker, "No pneumothorax. Small left apical pneumothorax.")
    flag = the_flag(result, ErrorSubtype.NEGATION)
    assert (flag.section, flag.sentence_index) == ("findings", 1)
    assert flag.confidence < 0.85  # weaker than a findings-vs-impression contradiction


def test_severity_change(checker: Checker) -> None:
    result = check(checker, "Large left pleural effusion.", "Small left pleural effusion.")
    flag = the_flag(result, ErrorSubtype.SEVERITY)
    assert (flag.section, flag.sentence_index) == ("findings", 0)
    assert check(checker, "Mild to moderate cardiomegaly.", "Moderate cardiomegaly.").flags == ()
    assert check(checker, "Minimal atelectasis.", "Mild atelectasis.").flags == ()


def test_location_change(checker: Checker) -> None:
    result = check(checker, "Right upper lobe consolidation.", "Right lower lobe pneumonia.")
    assert the_flag(result, ErrorSubtype.LOCATION).sentence_index == 0


def test_interval_flip_and_wording_without_comparison(checker: Checker) -> None:
    flip = check(checker, "Increased right pleural effusion.", "Decreased right pleural effusion.")
    assert the_flag(flip, ErrorSubtype.INTERVAL).rule_id == "text.interval.findings_impression"
    alone = check(
        checker,
        "Heart size unchanged since the prior exam.",
        "No acute disease.",
        comparison="None.",
    )
    flag = the_flag(alone, ErrorSubtype.INTERVAL)
    assert flag.severity is Severity.INFO and alone.verdict_simple == "N"
    with_prior = check(
        checker, "Heart size unchanged since the prior exam.", None, comparison="Chest 2 views ___"
    )
    assert with_prior.flags == ()


def test_measurements(checker: Checker) -> None:
    implausible = check(checker, "There is a 45 cm nodule in the right upper lobe.")
    assert the_flag(implausible, ErrorSubtype.MEASUREMENT).rule_id == "text.measurement.implausible"
    tube = check(checker, "Endotracheal tube tip 40 cm above the carina.")
    assert the_flag(tube, ErrorSubtype.MEASUREMENT).concept == "endotracheal_tube"
    mismatch = check(checker, "8 mm nodule in the left lower lobe.", "8 cm left lower lobe nodule.")
    assert the_flag(mismatch, ErrorSubtype.MEASUREMENT).section == "findings"
    assert check(checker, "8 mm nodule in the left lower lobe.", "8 mm left nodule.").flags == ()


def header_flags(checker: Checker, text: str, **facts: object) -> list[Flag]:
    result = checker.check(parse_report(text), HeaderFacts.from_dict(facts, parse_age=parse_age))
    return [f for f in result.flags if f.subtype is ErrorSubtype.HEADER_MISMATCH]


def test_header_sex(checker: Checker) -> None:
    text = "INDICATION: 54-year-old female with cough.\nFINDINGS: Left mastectomy. Lungs clear."
    flags = header_flags(checker, text, patient_sex="M")
    assert {f.section for f in flags} == {"indication", "findings"}
    assert all(f.source is FlagSource.HEADER_RULE for f in flags)
    assert any(f.severity is Severity.CRITICAL for f in flags)
    assert header_flags(checker, text, PatientSex="F") == []
    assert header_flags(checker, "FINDINGS: Lungs clear.", patient_sex="M") == []


def test_header_age_view_body_part_laterality(checker: Checker) -> None:
    text = "INDICATION: 54-year-old with cough.\nTECHNIQUE: PA and lateral views.\nFINDINGS: Clear."
    assert [f.rule_id for f in header_flags(checker, text, age="054Y", view="PA")] == []
    assert [f.rule_id for f in header_flags(checker, text, age=70)] == ["header.age"]
    assert [f.rule_id for f in header_flags(checker, text, view_position="AP")] == ["header.view"]
    assert [f.rule_id for f in header_flags(checker, text, portable=True)] == ["header.portable"]
    assert [f.rule_id for f in header_flags(checker, text, body_part="KNEE")] == [
        "header.body_part"
    ]
    assert [f.rule_id for f in header_flags(checker, text, modality="CT")] == ["header.modality"]
    ribs = "TECHNIQUE: Right rib series.\nFINDINGS: No fracture."
    assert [f.rule_id for f in header_flags(checker, ribs, image_laterality="L")] == [
        "header.laterality"
    ]
    assert header_flags(checker, ribs, image_laterality="R") == []


def test_header_facts_validation() -> None:
    assert HeaderFacts.from_dict({"PatientSex": "female", "portable": "yes"}) == HeaderFacts(
        patient_sex="F", portable=True
    )
    with pytest.raises(CheckerInputError, match="unknown header field"):
        HeaderFacts.from_dict({"colour": "red"})
    with pytest.raises(CheckerInputError, match="patient_sex"):
        HeaderFacts.from_dict({"sex": "X"})
    with pytest.raises(CheckerInputError, match=r"outside 0\.\.130"):
        HeaderFacts(patient_age_years=400)
    with pytest.raises(MedVLMError):
        HeaderFacts.from_dict({"age": "old"})


def test_flag_key_dedup_and_json(checker: Checker) -> None:
    result = check(checker, "No pneumothorax. Left pneumothorax.", "No pneumothorax.")
    keys = [f.key for f in result.flags]
    assert len(keys) == len(set(keys))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["verdict_simple"] == "Y"
    assert data["flags"][0]["complex_class"] == "substitute"
    assert data["provenance"]["kb_version"] == checker.kb.version
    assert "check.simple" in data["provenance"]["prompts"]
    assert data["unparseable_answers"] == 0 and data["model_answers"] == []
    assert set(data["timings_ms"]) >= {"text_ms", "header_ms", "total_ms"}


def test_config_validation_and_bad_input(checker: Checker) -> None:
    with pytest.raises(CheckerConfigError, match="max_verify_prompts"):
        CheckerConfig(max_verify_prompts=-1)
    with pytest.raises(CheckerConfigError, match="verdict_threshold"):
        CheckerConfig(verdict_threshold=2.0)
    with pytest.raises(CheckerInputError, match="ParsedReport"):
        checker.check("No pneumothorax.")  # type: ignore[arg-type]
    off = Checker(config=CheckerConfig(text_checks=False), kb=checker.kb)
    assert (
        off.check(parse_report("FINDINGS: No pneumothorax.\nIMPRESSION: Pneumothorax.")).flags == ()
    )


def test_check_is_thread_safe(checker: Checker) -> None:
    reports = [
        ParsedReport.from_sections(findings=f, impression=i)
        for f, i in [*CLEAN, ("Left pneumothorax.", "Right pneumothorax.")]
    ] * 20
    expected = [checker.check(r).to_dict()["flags"] for r in reports]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda r: checker.check(r).to_dict()["flags"], reports))
    assert got == expected


def test_denial_list_without_its_no(checker: Checker) -> None:
    result = check(
        checker,
        "Heart size normal. There is focal consolidation, pneumothorax or large pleural effusion.",
        "Negative.",
    )
    flags = [f for f in result.flags if f.sentence_index == 1]
    assert flags and all(f.subtype is ErrorSubtype.NEGATION for f in flags)
    assert "text.presence.asserted_denial_list" in {f.rule_id for f in flags} | {
        m["rule_id"] for f in flags for m in f.evidence.get("merged", [])
    }
    hedged = check(checker, "Left basilar atelectasis or infiltrate.", "Atelectasis or pneumonia.")
    assert hedged.flags == ()


def test_clear_lungs_with_a_finding_in_one_sentence(checker: Checker) -> None:
    result = check(checker, "The lungs are clear with focal consolidation. Heart normal.")
    flag = the_flag(result, ErrorSubtype.NEGATION)
    assert (flag.sentence_index, flag.concept) == (0, "consolidation")
    assert check(checker, "The lungs are clear except for right basilar atelectasis.").flags == ()


def test_focal_airspace_opacity_is_acute(checker: Checker) -> None:
    result = check(
        checker, "There is focal airspace opacity in the left base.", "No acute disease."
    )
    assert the_flag(result, ErrorSubtype.INSERT_FINDING).concept == "airspace_opacity"
    assert check(checker, "Streaky bibasilar opacities.", "No acute disease.").flags == ()


def test_significant_finding_missing_from_a_normal_impression(checker: Checker) -> None:
    result = check(
        checker,
        "There is a 3 cm mass in the left hilum. Lungs otherwise clear.",
        "No acute cardiopulmonary abnormality.",
    )
    flag = the_flag(result, ErrorSubtype.INSERT_FINDING)
    assert flag.rule_id == "text.presence.significant_not_in_impression"
    assert (flag.sentence_index, flag.concept) == (0, "lung_lesion")
    for findings in (
        "Stable 12 mm calcified nodule in the right upper lobe.",
        "Mild cardiomegaly.",
        "Old healed left rib fracture.",
    ):
        assert check(checker, findings, "No acute cardiopulmonary abnormality.").flags == ()
    assert check(checker, "Moderate cardiomegaly.", "No acute findings, see above.").flags == ()


@pytest.mark.parametrize("text", MIMIC_CLEAN)
def test_clean_mimic_style_raw_reports(checker: Checker, text: str) -> None:
    result = checker.check(parse_report(text))
    assert result.flags == (), [f.message for f in result.flags]


def test_mimic_sex_codes(checker: Checker) -> None:
    flags = header_flags(checker, MIMIC_CLEAN[0], patient_sex="M")
    assert [(f.section, f.rule_id) for f in flags] == [("indication", "header.sex")]
    assert header_flags(checker, MIMIC_CLEAN[2], patient_sex="M") == []


def test_header_laterality_words_and_codes() -> None:
    assert HeaderFacts.from_dict({"ImageLaterality": "left"}).image_laterality == "L"
    with pytest.raises(CheckerInputError, match="image_laterality"):
        HeaderFacts.from_dict({"image_laterality": "sideways"})


def test_reports_parsed_with_another_kb_version_are_reparsed(checker: Checker) -> None:
    import dataclasses

    other = dataclasses.replace(checker.kb, version="test.0")
    custom = Checker(kb=other)
    report = ParsedReport.from_sections(
        findings="Left pneumothorax.", impression="Right pneumothorax."
    )
    assert report.kb_version == checker.kb.version != other.version
    result = custom.check(report)
    assert result.provenance["kb_version"] == "test.0"
    assert [f.subtype for f in result.flags] == [ErrorSubtype.LATERALITY]
