"""The eligibility policy lives in the rules file (issue 9, item 4): a site's edit takes effect."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

import dicom_io
from dicom_io import EligibilityPolicy, SelectionRules, SelectionRulesError

from .conftest import make_dx


def _packaged() -> dict[str, Any]:
    text = resources.files("dicom_io").joinpath("data/default_selection.yaml").read_text("utf-8")
    spec = yaml.safe_load(text)
    assert isinstance(spec, dict)
    return spec


def _site_copy(tmp_path: Path, edit: Any) -> EligibilityPolicy:
    spec = _packaged()
    edit(spec["eligibility"])
    path = tmp_path / "site_selection.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return SelectionRules.load(path).eligibility_policy()


def _rule(rules: list[dict[str, Any]], keyword: str) -> dict[str, Any]:
    (rule,) = [r for r in rules if keyword in r["require"]]
    return rule


def test_a_site_that_allows_another_modality_gets_it(tmp_path: Path) -> None:
    data = make_dx(Modality="RG")
    refused = dicom_io.read_instance(data)
    assert refused.eligibility.reasons == ("modality RG is not a radiograph (CR or DX expected)",)
    policy = _site_copy(
        tmp_path, lambda rules: _rule(rules, "Modality")["require"]["Modality"]["in"].append("RG")
    )
    assert dicom_io.read_instance(data, eligibility=policy).eligibility.eligible


def test_a_site_that_drops_a_rule_or_tightens_one(tmp_path: Path) -> None:
    knee = make_dx(BodyPartExamined="KNEE")
    assert dicom_io.read_instance(knee).eligibility.reasons == ("body part KNEE is not the chest",)
    no_part_rule = _site_copy(
        tmp_path, lambda rules: rules.remove(_rule(rules, "BodyPartExamined"))
    )
    assert dicom_io.read_instance(knee, eligibility=no_part_rule).eligibility.eligible

    def only_cr(rules: list[dict[str, Any]]) -> None:
        _rule(rules, "Modality")["require"]["Modality"]["in"] = ["CR"]
        _rule(rules, "Modality")["reason"] = "modality {value}: this site sends CR only"

    dx = make_dx()
    assert dicom_io.read_instance(dx).eligibility.eligible
    tight = _site_copy(tmp_path, only_cr)
    assert dicom_io.read_instance(dx, eligibility=tight).eligibility.reasons == (
        "modality DX: this site sends CR only",
    )


def test_a_rules_file_without_eligibility_uses_the_packaged_list(tmp_path: Path) -> None:
    spec = _packaged()
    del spec["eligibility"]
    rules = SelectionRules.from_dict(spec)
    assert rules.eligibility is None
    assert rules.eligibility_policy() == SelectionRules.default().eligibility_policy()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"require": {"Modality": ["CR"]}}, "expected keys require and reason"),
        (
            {"require": {"Modality": ["CR"], "BitsAllocated": [16]}, "reason": "x"},
            "one DICOM keyword per rule",
        ),
        ({"require": {"Modality": ["CR"]}, "reason": "modality {modality}"}, "placeholder"),
        ({"require": {"Modalty": ["CR"]}, "reason": "x"}, "'Modalty' is not a DICOM keyword"),
    ],
)
def test_a_bad_rule_is_refused_when_loaded(rule: dict[str, Any], message: str) -> None:
    spec = {**_packaged(), "eligibility": [rule]}
    with pytest.raises(SelectionRulesError, match=message):
        SelectionRules.from_dict(spec)
