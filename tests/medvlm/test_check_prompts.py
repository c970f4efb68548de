"""Golden strings of the versioned checking prompts and the strict answer parsers.

A change to any golden string here must come with a new template version."""

from __future__ import annotations

import pytest

from medvlm.prompts.checking import (
    COMPLEX_CHOICES,
    PROMPTS,
    SIMPLE_CHOICES,
    Box,
    PromptTemplate,
    parse_box_answer,
    parse_choice_answer,
    parse_yes_no_answer,
    render_complex,
    render_generate,
    render_localise,
    render_simple,
    render_verify,
)
from medvlm.prompts.knowledge import load_knowledge_base

FINDINGS = "Small right\n pleural effusion.  No pneumothorax."


def test_versions() -> None:
    assert {k: v.version for k, v in PROMPTS.items()} == {
        "check.simple": "1",
        "check.complex": "1",
        "generate.findings": "1",
        "generate.findings_indication": "1",
        "verify.finding": "1",
        "localise.finding": "1",
    }


def test_simple_golden() -> None:
    assert render_simple(FINDINGS) == (
        "Here is the findings section of the radiology report written for this chest X-ray.\n"
        "Findings: Small right pleural effusion. No pneumothorax.\n"
        "Does the findings section contain any mistakes or errors when compared with the image?\n"
        "Options:\nY: mistakes or errors\nN: none\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_complex_golden() -> None:
    assert render_complex(FINDINGS) == (
        "Here is the findings section of the radiology report written for this chest X-ray.\n"
        "Findings: Small right pleural effusion. No pneumothorax.\n"
        "Which kind of error, if any, does the findings section contain when compared with the "
        "image?\nOptions:\nA: no error\nB: a finding was inserted that is not in the image\n"
        "C: a finding that is in the image was left out\n"
        "D: a word or phrase was changed (side, presence, severity, location, size or change over "
        "time)\nAnswer with the option's letter from the given choices directly."
    )


def test_generate_golden() -> None:
    assert render_generate(None)[1] == (
        "Provide a description of the findings in the radiology image."
    )
    template, text = render_generate(" Cough\n and fever ")
    assert template.id == "generate.findings_indication"
    assert text == (
        "Provide a description of the findings in the radiology image given the following "
        "indication: Cough and fever"
    )


def test_grounding_prompts_are_built_from_the_knowledge_base() -> None:
    kb = load_knowledge_base()
    assert render_verify(kb["pneumothorax"], "left", frozenset({"upper"})) == (
        "Look at this chest X-ray. Is there thin white visceral pleural line with no lung markings "
        "beyond it, with lucent (dark) pleural space without vessels, thin apical rim to complete "
        "lung collapse, in the left hemithorax, upper zone?\n"
        "(This is how pneumothorax looks on a chest X-ray.)\n"
        "Answer with one word: yes or no."
    )
    assert render_localise(kb["cardiomegaly"]) == (
        "Locate cardiomegaly in this chest X-ray: widened cardiac silhouette, cardiothoracic ratio "
        "above 0.5 on a PA film, with soft tissue density, whole heart, typically at the central, "
        "cardiac silhouette.\n"
        "Answer with one bounding box [x1, y1, x2, y2] in coordinates from 0 to 1 relative to the "
        "image width and height, or with the word none if it is not visible."
    )


def test_template_render_needs_all_fields() -> None:
    template = PromptTemplate("t", "1", "Is there {a} and {b}?")
    assert template.fields == frozenset({"a", "b"}) and template.ref == "t@1"
    with pytest.raises(KeyError, match=r"needs \['b'\]"):
        template.render(a="x")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("Y", "Y"), ("N", "N"), (" N. ", "N"), ("(Y)", "Y"), ("Y: mistakes or errors", "Y"),
     ("y", "Y"), ("Yes", None), ("YN", None), ("", None), ("X", None), ("N or Y", None),
     ("no errors", None)],
)  # fmt: skip
def test_simple_answers_are_parsed_strictly(answer: str, expected: str | None) -> None:
    assert parse_choice_answer(answer, SIMPLE_CHOICES) == expected


def test_complex_answers() -> None:
    assert parse_choice_answer("D", COMPLEX_CHOICES) == "D"
    assert parse_choice_answer("B) inserted", COMPLEX_CHOICES) == "B"
    assert parse_choice_answer("a finding was inserted", COMPLEX_CHOICES) is None
    assert parse_choice_answer("E", COMPLEX_CHOICES) is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("yes", True), ("No.", False), ("Yes, at the right base", True), ("no!", False),
     ("maybe", None), ("yes no", None), ("I think yes", None), ("", None)],
)  # fmt: skip
def test_yes_no(answer: str, expected: bool | None) -> None:
    assert parse_yes_no_answer(answer) is expected


def test_boxes() -> None:
    box = parse_box_answer("[0.1, 0.2, 0.5, 0.6]")
    assert box == Box(0.1, 0.2, 0.5, 0.6)
    assert isinstance(box, Box) and box.to_pixels(200, 100) == [20, 20, 100, 60]
    assert parse_box_answer("None.") is False
    for bad in ("[0.5, 0.2, 0.1, 0.6]", "[1, 2, 3, 4]", "(0.1, 0.2, 0.3, 0.4)", "box: 1,2,3,4"):
        assert parse_box_answer(bad) is None
