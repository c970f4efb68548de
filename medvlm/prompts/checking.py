"""Versioned, immutable prompt templates for report error checking, and their strict answer parsers.

Every template has an id and a version; a change of wording is a new version (golden tests pin the
rendered strings). Parsers accept only the answer shapes the prompt asks for and return ``None`` for
anything else: callers count and record unparseable answers, they never guess.

Styles: SIMPLE and COMPLEX follow the multiple-choice error-checking prompts of arXiv 2312.13103 (the
image, the question, the findings, the options, "answer with the option's letter"). GENERATE is
LLaVA-Rad's own findings instruction. VERIFY and LOCALISE are knowledge-decomposed grounding prompts
(arXiv 2503.03278): the finding is described by its visual attributes from the knowledge base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Formatter

from medvlm.prompts.knowledge import Finding

__all__ = [
    "COMPLEX_CHOICES",
    "COMPLEX_ERROR_CHECK",
    "GENERATE_FINDINGS",
    "GENERATE_FINDINGS_WITH_INDICATION",
    "LOCALISE_FINDING",
    "PROMPTS",
    "SIMPLE_CHOICES",
    "SIMPLE_ERROR_CHECK",
    "VERIFY_FINDING",
    "Box",
    "PromptTemplate",
    "describe_finding",
    "parse_box_answer",
    "parse_choice_answer",
    "parse_yes_no_answer",
    "render_complex",
    "render_generate",
    "render_localise",
    "render_simple",
    "render_verify",
]


@dataclass(frozen=True)
class PromptTemplate:
    """An immutable instruction template (the user turn after the image token)."""

    id: str
    version: str
    text: str

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(name for _, name, _, _ in Formatter().parse(self.text) if name)

    def render(self, **values: str) -> str:
        missing = self.fields - set(values)
        if missing:
            raise KeyError(f"prompt {self.id} v{self.version} needs {sorted(missing)}")
        return self.text.format(**values)

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"


SIMPLE_ERROR_CHECK = PromptTemplate(
    id="check.simple",
    version="1",
    text=(
        "Here is the findings section of the radiology report written for this chest X-ray.\n"
        "Findings: {findings}\n"
        "Does the findings section contain any mistakes or errors when compared with the image?\n"
        "Options:\n"
        "Y: mistakes or errors\n"
        "N: none\n"
        "Answer with the option's letter from the given choices directly."
    ),
)
SIMPLE_CHOICES: dict[str, str] = {"Y": "error", "N": "none"}

COMPLEX_ERROR_CHECK = PromptTemplate(
    id="check.complex",
    version="1",
    text=(
        "Here is the findings section of the radiology report written for this chest X-ray.\n"
        "Findings: {findings}\n"
        "Which kind of error, if any, does the findings section contain when compared with the image?\n"
        "Options:\n"
        "A: no error\n"
        "B: a finding was inserted that is not in the image\n"
        "C: a finding that is in the image was left out\n"
        "D: a word or phrase was changed (side, presence, severity, location, size or change over "
        "time)\n"
        "Answer with the option's letter from the given choices directly."
    ),
)
COMPLEX_CHOICES: dict[str, str] = {"A": "original", "B": "insert", "C": "remove", "D": "substitute"}

GENERATE_FINDINGS = PromptTemplate(
    id="generate.findings",
    version="1",
    text="Provide a description of the findings in the radiology image.",
)
GENERATE_FINDINGS_WITH_INDICATION = PromptTemplate(
    id="generate.findings_indication",
    version="1",
    text=(
        "Provide a description of the findings in the radiology image given the following "
        "indication: {indication}"
    ),
)

VERIFY_FINDING = PromptTemplate(
    id="verify.finding",
    version="1",
    text=(
        "Look at this chest X-ray. Is there {shape}, with {density}, {size}, {where}?\n"
        "(This is how {name} looks on a chest X-ray.)\n"
        "Answer with one word: yes or no."
    ),
)

LOCALISE_FINDING = PromptTemplate(
    id="localise.finding",
    version="1",
    text=(
        "Locate {name} in this chest X-ray: {shape}, with {density}, {size}, typically {where}.\n"
        "Answer with one bounding box [x1, y1, x2, y2] in coordinates from 0 to 1 relative to the "
        "image width and height, or with the word none if it is not visible."
    ),
)

PROMPTS: dict[str, PromptTemplate] = {
    p.id: p
    for p in (
        SIMPLE_ERROR_CHECK,
        COMPLEX_ERROR_CHECK,
        GENERATE_FINDINGS,
        GENERATE_FINDINGS_WITH_INDICATION,
        VERIFY_FINDING,
        LOCALISE_FINDING,
    )
}

_WS = re.compile(r"\s+")
_SIDE_WORDS = {"left": "in the left hemithorax", "right": "in the right hemithorax"}
_SIDE_WORDS["bilateral"] = "in both hemithoraces"
_ZONE_WORDS = {"upper": "upper zone", "mid": "mid zone", "lower": "lower zone"}


def _oneline(text: str) -> str:
    return _WS.sub(" ", text).strip()


def render_simple(findings: str) -> str:
    return SIMPLE_ERROR_CHECK.render(findings=_oneline(findings))


def render_complex(findings: str) -> str:
    return COMPLEX_ERROR_CHECK.render(findings=_oneline(findings))


def render_generate(indication: str | None = None) -> tuple[PromptTemplate, str]:
    if indication and indication.strip():
        template = GENERATE_FINDINGS_WITH_INDICATION
        return template, template.render(indication=_oneline(indication))
    return GENERATE_FINDINGS, GENERATE_FINDINGS.render()


def describe_finding(
    finding: Finding, side: str | None = None, zones: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The decomposed description fields of a finding at a reported side and zone."""
    attrs = finding.attributes
    if side in _SIDE_WORDS:
        where = _SIDE_WORDS[side]
        if zones:
            zone = " and ".join(_ZONE_WORDS[z] for z in sorted(zones) if z in _ZONE_WORDS)
            where = f"{where}, {zone}"
    elif zones:
        where = "in the " + " and ".join(_ZONE_WORDS[z] for z in sorted(zones) if z in _ZONE_WORDS)
    else:
        where = f"at the {attrs.location}"
    return {
        "name": finding.name,
        "shape": attrs.shape,
        "density": attrs.density,
        "size": attrs.size_scale,
        "where": where,
    }


def render_verify(
    finding: Finding, side: str | None = None, zones: frozenset[str] = frozenset()
) -> str:
    return VERIFY_FINDING.render(**describe_finding(finding, side, zones))


def render_localise(finding: Finding) -> str:
    fields = describe_finding(finding)
    fields["where"] = f"at the {finding.attributes.location}"
    return LOCALISE_FINDING.render(**fields)


_CHOICE_RE = re.compile(r"^\s*\(?([A-Za-z])\)?\s*(?:[.:)]\s*.*)?$", re.DOTALL)
_YES_NO_RE = re.compile(r"^\s*(yes|no)\s*(?:[.!,]\s*.*)?$", re.IGNORECASE | re.DOTALL)
_BOX_RE = re.compile(
    r"^\s*\[\s*(-?\d*\.?\d+)\s*,\s*(-?\d*\.?\d+)\s*,\s*(-?\d*\.?\d+)\s*,\s*(-?\d*\.?\d+)\s*\]\s*\.?\s*$"
)
_NONE_RE = re.compile(r"^\s*none\s*\.?\s*$", re.IGNORECASE)


def parse_choice_answer(answer: str, choices: dict[str, str]) -> str | None:
    """The option letter when the answer is exactly one of the letters (``"Y"``, ``"(B)"``,
    ``"D: changed"``); ``None`` for anything else (a sentence, two letters, an unknown letter)."""
    match = _CHOICE_RE.match(answer)
    if match is None:
        return None
    letter = match.group(1).upper()
    if letter not in choices:
        return None
    if match.group(1).islower() and len(answer.strip()) > 1:
        return None  # "a finding ..." is prose, not the letter a
    return letter


def parse_yes_no_answer(answer: str) -> bool | None:
    """``True`` for "yes", ``False`` for "no" (optionally followed by punctuation and a reason)."""
    match = _YES_NO_RE.match(answer)
    if match is None:
        return None
    return match.group(1).lower() == "yes"


@dataclass(frozen=True)
class Box:
    """A box in normalised image coordinates (0..1), x to the right, y down."""

    x1: float
    y1: float
    x2: float
    y2: float

    def to_pixels(self, width: int, height: int) -> list[int]:
        return [
            round(self.x1 * width),
            round(self.y1 * height),
            round(self.x2 * width),
            round(self.y2 * height),
        ]


def parse_box_answer(answer: str) -> Box | bool | None:
    """A :class:`Box`, ``False`` for an explicit "none", or ``None`` when unparseable or invalid."""
    if _NONE_RE.match(answer):
        return False
    match = _BOX_RE.match(answer)
    if match is None:
        return None
    x1, y1, x2, y2 = (float(g) for g in match.groups())
    if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
        return None
    return Box(x1, y1, x2, y2)
