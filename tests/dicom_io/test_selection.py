"""Series selection: rules as configuration, every decision explained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import dicom_io
from dicom_io import (
    Eligibility,
    InstanceKind,
    SelectionCandidate,
    SelectionRules,
    SelectionRulesError,
    select_image,
)

from .conftest import SC_STORAGE, corpus_file, make_dx


def _candidate(uid: str, **attributes: Any) -> SelectionCandidate:
    base: dict[str, Any] = {
        "Modality": "DX",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1",
        "BodyPartExamined": "CHEST",
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "Rows": 2000,
        "Columns": 2000,
    }
    base.update({k: v for k, v in attributes.items() if v is not None})
    for key in [k for k, v in attributes.items() if v is None]:
        base.pop(key, None)
    return SelectionCandidate(uid, "1.2.3", InstanceKind.IMAGE, base, Eligibility(True))


def _study_with_lateral_frontal_and_sc() -> list[SelectionCandidate]:
    """Three real instances written in the test: a lateral, a frontal and a secondary capture."""
    lateral = dicom_io.read_instance(
        make_dx(SOPInstanceUID="1.2.3.1", ViewPosition="LL", SeriesDescription="CHEST LAT")
    )
    frontal = dicom_io.read_instance(
        make_dx(SOPInstanceUID="1.2.3.2", ViewPosition="PA", SeriesDescription="CHEST PA")
    )
    capture = dicom_io.read_instance(
        make_dx(
            SOPInstanceUID="1.2.3.3",
            SOPClassUID=SC_STORAGE,
            Modality="OT",
            ImageType=["DERIVED", "SECONDARY"],
        )
    )
    return [SelectionCandidate.from_instance(i) for i in (lateral, frontal, capture)]


def test_frontal_is_chosen_over_lateral_and_secondary_capture_with_reasons() -> None:
    decision = select_image(_study_with_lateral_frontal_and_sc())
    assert decision.chosen == "1.2.3.2"
    reasons = {r.sop_instance_uid: r for r in decision.reasons}
    assert reasons["1.2.3.2"].chosen
    assert "chosen by rule 'original frontal chest radiograph'" in reasons["1.2.3.2"].reason
    assert "ViewPosition=PA" in reasons["1.2.3.2"].reason
    assert not reasons["1.2.3.1"].chosen
    assert "ViewPosition is 'LL', expected one of PA, AP" in reasons["1.2.3.1"].reason
    assert "secondary capture" in reasons["1.2.3.3"].reason
    assert [r.sop_instance_uid for r in decision.reasons] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    as_json = json.loads(json.dumps(decision.to_dict()))
    assert as_json["chosen"] == "1.2.3.2" and len(as_json["reasons"]) == 3


def test_selection_runs_from_stored_json_attributes() -> None:
    stored = [
        json.loads(
            json.dumps(
                {
                    "uid": c.sop_instance_uid,
                    "series": c.series_instance_uid,
                    "kind": str(c.kind),
                    "attributes": dict(c.attributes),
                    "eligible": c.eligibility.eligible,
                    "reasons": list(c.eligibility.reasons),
                }
            )
        )
        for c in _study_with_lateral_frontal_and_sc()
    ]
    candidates = [
        SelectionCandidate(
            s["uid"],
            s["series"],
            s["kind"],
            s["attributes"],
            Eligibility(s["eligible"], tuple(s["reasons"])),
        )
        for s in stored
    ]
    assert select_image(candidates).chosen == "1.2.3.2"


def test_pa_is_preferred_over_ap() -> None:
    decision = select_image(
        [_candidate("ap", ViewPosition="AP"), _candidate("pa", ViewPosition="PA")]
    )
    assert decision.chosen == "pa"
    ap_reason = decision.reasons[0].reason
    assert ap_reason.startswith(
        "matched rule 'original frontal chest radiograph' but ranked below pa"
    )
    assert "ViewPosition is 'AP', expected one of PA" in ap_reason


def test_original_preferred_over_derived_primary() -> None:
    decision = select_image(
        [
            _candidate("derived", ViewPosition="PA", ImageType=["DERIVED", "PRIMARY"]),
            _candidate("original", ViewPosition="PA", ImageType=["ORIGINAL", "PRIMARY"]),
        ]
    )
    assert decision.chosen == "original"


def test_derived_secondary_and_for_processing_are_skipped() -> None:
    decision = select_image(
        [
            _candidate("sec", ViewPosition="PA", ImageType=["DERIVED", "SECONDARY"]),
            _candidate("raw", ViewPosition="PA", PresentationIntentType="FOR PROCESSING"),
        ]
    )
    assert decision.chosen is None
    assert "ImageType is 'DERIVED\\SECONDARY'" in decision.reasons[0].reason
    assert "PresentationIntentType is 'FOR PROCESSING'" in decision.reasons[1].reason
    assert "no fallback rule matched either" in decision.reasons[1].reason


def test_fallback_on_view_code_sequence_when_view_position_is_missing() -> None:
    decision = select_image(
        [
            _candidate("lat", ViewPosition=None, ViewCodeMeaning="left lateral"),
            _candidate("pa", ViewPosition=None, ViewCodeMeaning="postero-anterior"),
        ]
    )
    assert decision.chosen == "pa"
    assert decision.tier == "frontal chest radiograph by view code"
    assert "fallback" in decision.reasons[1].reason


def test_fallback_on_series_description_then_on_no_view_information() -> None:
    by_description = select_image(
        [
            _candidate("lat", ViewPosition=None, SeriesDescription="CHEST LAT"),
            _candidate("front", ViewPosition=None, SeriesDescription="CHEST AP"),
        ]
    )
    assert by_description.chosen == "front"
    no_view = select_image([_candidate("only", ViewPosition=None, BodyPartExamined=None)])
    assert no_view.chosen == "only"
    assert no_view.tier == "chest radiograph without view information"


def test_non_images_and_ineligible_are_skipped_with_their_reason() -> None:
    sr = SelectionCandidate(
        "sr", "s", InstanceKind.STRUCTURED_REPORT, {}, Eligibility(False, ("x",))
    )
    colour = SelectionCandidate(
        "rgb", "s", "image", {"Modality": "US"}, Eligibility(False, ("colour image (RGB)",))
    )
    decision = select_image([sr, colour])
    assert decision.chosen is None
    assert decision.reasons[0].reason == "skipped: a structured report is not an image"
    assert (
        decision.reasons[1].reason
        == "skipped: not eligible as the model image (colour image (RGB))"
    )


def test_real_corpus_study_rg1_chosen_over_ct_and_rg3() -> None:
    instances = [
        dicom_io.read_instance(corpus_file(n))
        for n in ("CT_small.dcm", "RG3_UNCR.dcm", "RG1_UNCR.dcm")
    ]
    decision = select_image([SelectionCandidate.from_instance(i) for i in instances])
    assert decision.chosen == instances[2].sop_instance_uid


RULES_YAML = """
name: custom
version: 3
tiers:
  - name: thin CT
    conditions:
      Modality: CT
      SliceThickness: {range: [0.5, 3]}
      ImageType: {contains: [ORIGINAL, PRIMARY]}
      SeriesDescription: {not: "scout|localizer", if_missing: pass}
    prefer:
      - {SeriesDescription: "(?i)lung"}
"""


def test_custom_rules_from_yaml_and_json_with_ranges_regex_lists_negation(tmp_path: Path) -> None:
    yaml_path = tmp_path / "rules.yaml"
    yaml_path.write_text(RULES_YAML)
    rules = SelectionRules.load(yaml_path)
    json_path = tmp_path / "rules.json"
    json_path.write_text(json.dumps(rules.to_dict()))
    assert SelectionRules.load(json_path).tiers[0].name == "thin CT"
    thick = _candidate("thick", Modality="CT", SliceThickness=5.0)
    scout = _candidate("scout", Modality="CT", SliceThickness=1.0, SeriesDescription="Scout")
    soft = _candidate("soft", Modality="CT", SliceThickness=1.0, SeriesDescription="soft tissue")
    lung = _candidate("lung", Modality="CT", SliceThickness=2.0, SeriesDescription="LUNG 2mm")
    decision = select_image([thick, scout, soft, lung], rules)
    assert decision.chosen == "lung"
    by_uid = {r.sop_instance_uid: r.reason for r in decision.reasons}
    assert "SliceThickness is '5.0', expected in the range [0.5, 3]" in by_uid["thick"]
    assert "expected not matching /scout|localizer/" in by_uid["scout"]
    assert "ranked below lung" in by_uid["soft"]
    assert decision.to_dict()["rules"] == {"name": "custom", "version": 3}


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"name": "x", "tiers": []}, "'tiers' must be a non-empty list"),
        (
            {"name": "x", "tiers": [{"conditions": {"ViewPositon": ["PA"]}}]},
            "'ViewPositon' is not a DICOM keyword",
        ),
        (
            {"name": "x", "tiers": [{"conditions": {"Modality": {"regexp": "CR"}}}]},
            r"unknown operator\(s\) \['regexp'\]",
        ),
        ({"name": "x", "tiers": [{"conditions": {"Modality": "(CR"}}]}, "invalid regex"),
        (
            {"name": "x", "tiers": [{"conditions": {"Rows": {"range": [10, 1]}}}]},
            r"expected \[low, high\]",
        ),
        (
            {"name": "x", "tiers": [{"conditions": {"Rows": {"if_missing": "maybe"}}}]},
            "'pass' or 'fail'",
        ),
    ],
)
def test_malformed_rules_fail_at_load_with_a_clear_message(
    spec: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(SelectionRulesError, match=pattern):
        SelectionRules.from_dict(spec)


def test_invalid_yaml_is_a_rules_error() -> None:
    with pytest.raises(SelectionRulesError, match="invalid YAML"):
        SelectionRules.from_yaml("name: [unclosed")


def test_default_rules_only_use_stored_attributes() -> None:
    stored = {*dicom_io.SELECTION_KEYWORDS, "ViewCodeMeaning"}
    assert SelectionRules.default().keywords() <= stored


def test_default_rules_ship_as_package_data() -> None:
    rules = SelectionRules.default()
    assert rules.name == "frontal-chest-radiograph"
    assert rules.tiers[0].name == "original frontal chest radiograph"
