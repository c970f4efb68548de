"""Header facts once (issue 9, item 2): one explicit mapping between dicom_io's, the checker's and
the API's header facts, and one DICOM age parser."""

from __future__ import annotations

import dataclasses

import pytest

import dicom_io
from app.api.schemas import HeaderIn
from app.services.headers import CHECKER_FIELD_OF_DICOM, checker_facts, checker_facts_from_dicom
from medvlm.checking import CheckerInputError, HeaderFacts


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_dicom_field_is_mapped_or_declined_and_every_checker_field_is_fed() -> None:
    assert set(CHECKER_FIELD_OF_DICOM) == _fields(dicom_io.HeaderFacts)
    fed = {checker for checker in CHECKER_FIELD_OF_DICOM.values() if checker is not None}
    assert fed == _fields(HeaderFacts)


def test_the_api_header_has_exactly_the_checker_fields() -> None:
    assert set(HeaderIn.model_fields) == _fields(HeaderFacts)


def test_stored_dicom_facts_reach_the_checker() -> None:
    stored = dicom_io.HeaderFacts(
        patient_sex="F",
        patient_age_years=45.0,
        view_position="AP",
        image_laterality="L",
        body_part="CHEST",
        portable=True,
        modality="DX",
        manufacturer="ACME",
        rows=10,
    ).to_dict()
    facts = checker_facts_from_dicom({**stored, "retired_field": "x"})
    assert facts == HeaderFacts(
        patient_sex="F",
        patient_age_years=45.0,
        view_position="AP",
        image_laterality="L",
        body_part="CHEST",
        portable=True,
        modality="DX",
    )


@pytest.mark.parametrize("age", ["045Y", "540M", "002W", "010D"])
def test_one_dicom_age_parser(age: str) -> None:
    assert checker_facts({"age": age}).patient_age_years == dicom_io.parse_age(age)


def test_without_the_parser_a_dicom_age_string_is_refused() -> None:
    with pytest.raises(CheckerInputError, match=r"'045Y' is not a number.*dicom_io.parse_age"):
        HeaderFacts.from_dict({"age": "045Y"})
    assert HeaderFacts.from_dict({"age": "45.5"}).patient_age_years == 45.5
