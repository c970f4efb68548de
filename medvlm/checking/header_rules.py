"""Header rules: the report against the DICOM header (sex, age, view, portable, body part, side)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from medvlm.checking.evidence import make_flag
from medvlm.checking.types import Flag, HeaderFacts
from medvlm.prompts.knowledge import KnowledgeBase
from medvlm.reports import ParsedReport, Section, SectionName, Sentence
from medvlm.taxonomy import ErrorSubtype, FlagSource, Severity

__all__ = ["HEADER_RULESET_VERSION", "HeaderRules"]

HEADER_RULESET_VERSION = "1.0"
_SEX_WORDS = {
    "F": re.compile(r"(?<![\w])(?:female|woman|lady|girl|mrs|ms)(?![\w])|(?<=___)F(?![\w])", re.I),
    "M": re.compile(r"(?<![\w])(?:male|man|gentleman|boy|mr)(?![\w])|(?<=___)M(?![\w])", re.I),
}
_PRONOUNS = {
    "F": re.compile(r"(?<![\w])(?:she|her|hers)(?![\w])", re.I),
    "M": re.compile(r"(?<![\w])(?:he|his|him)(?![\w])", re.I),
}
_MALE_ANATOMY = re.compile(r"(?<![\w])(?:prostat\w*|scrot\w*|testic\w*|testes)(?![\w])", re.I)
_AGE_RE = re.compile(
    r"(?<![\w.])(\d{1,3})(?:\s*-?\s*|-)(?:year|yr)s?(?:\s*-?\s*|-)old|(?<![\w.])(\d{1,3})\s*(?:yo|y/o|y\.o\.)(?![\w])",
    re.I,
)
_VIEW_RE = re.compile(
    r"(?<![\w])(?:(?P<pa>pa|posteroanterior|postero-anterior)|(?P<ap>ap|anteroposterior|"
    r"antero-posterior))(?:,? and lateral| upright| erect| semi-?erect| supine| portable)?"
    r"\s+(?:views?|projections?|technique|radiographs?|films?|images?|chest)(?![\w])|"
    r"(?<![\w])(?:(?P<pa2>pa)|(?P<ap2>ap)) and lateral(?![\w])|"
    r"(?<![\w])(?P<portable>portable|bedside|supine)(?![\w])",
    re.I,
)
_SIDE_PART_RE = re.compile(
    r"(?<![\w])(?P<side>left|right)\s+(?:anterior\s+|posterior\s+|lateral\s+)?"
    r"(?P<part>shoulder|ribs?|clavicle|humerus|scapula|breast|hand|wrist|elbow|knee|hip|foot|ankle)"
    r"(?![\w])",
    re.I,
)
_CHEST_PARTS = ("CHEST", "THORAX", "LUNG", "RIB", "STERNUM", "PORT CHEST", "TORSO")
_RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "PX", "OT"})
_FRONTAL = frozenset({"PA", "AP"})
_TECHNIQUE_SECTIONS = (SectionName.TECHNIQUE, SectionName.OTHER, SectionName.FINDINGS)


def _sentences(report: ParsedReport) -> Iterator[tuple[Section, Sentence]]:
    for section in report.sections.values():
        for sentence in section.sentences:
            yield section, sentence


class HeaderRules:
    """Compares report wording with :class:`HeaderFacts` (stateless after construction)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self._kb = kb
        self._female_concepts = frozenset(
            f.id for f in kb.findings.values() if f.sex_specific == "F"
        )

    def run(self, report: ParsedReport, header: HeaderFacts) -> list[Flag]:
        flags: list[Flag] = []
        flags.extend(self._sex(report, header))
        flags.extend(self._age(report, header))
        flags.extend(self._view(report, header))
        flags.extend(self._body_part(report, header))
        flags.extend(self._laterality(report, header))
        return flags

    def _flag(
        self,
        rule: str,
        message: str,
        confidence: float,
        section: Section | None,
        sentence: Sentence | None,
        concept: str,
        header_field: str,
        header_value: object,
        severity: Severity = Severity.WARNING,
    ) -> Flag:
        return make_flag(
            subtype=ErrorSubtype.HEADER_MISMATCH,
            rule_id=rule,
            rule_version=HEADER_RULESET_VERSION,
            message=message,
            confidence=confidence,
            section=None if section is None else section.name,
            sentence=sentence,
            concept=concept,
            source=FlagSource.HEADER_RULE,
            severity=severity,
            extra={
                "header_field": header_field,
                "header_value": header_value,
                "sentence": None if sentence is None else sentence.text,
            },
        )

    def _sex(self, report: ParsedReport, header: HeaderFacts) -> Iterator[Flag]:
        sex = header.patient_sex
        if sex not in ("M", "F"):
            return
        other = "F" if sex == "M" else "M"
        label = {"M": "male", "F": "female"}
        for section, sentence in _sentences(report):
            text = sentence.text
            hit: tuple[str, float] | None = None
            if other == "F":
                for mention in sentence.mentions:
                    if mention.concept in self._female_concepts:
                        hit = (mention.text, 0.85)
                        break
            elif (m := _MALE_ANATOMY.search(text)) is not None:
                hit = (m.group(0), 0.85)
            if hit is None and (m := _SEX_WORDS[other].search(text)) is not None:
                hit = (m.group(0), 0.9)
            if hit is None and (m := _PRONOUNS[other].search(text)) is not None:
                hit = (m.group(0), 0.6)
            if hit is None:
                continue
            yield self._flag(
                "header.sex",
                f"{section.name.value.capitalize()} sentence {sentence.index + 1} says "
                f"'{hit[0]}', which fits a {label[other]} patient, but the image header gives "
                f"patient sex {sex}: check that the report belongs to this patient.",
                hit[1],
                section,
                sentence,
                "sex",
                "patient_sex",
                sex,
                Severity.CRITICAL if hit[1] >= 0.85 else Severity.WARNING,
            )

    def _age(self, report: ParsedReport, header: HeaderFacts) -> Iterator[Flag]:
        age = header.patient_age_years
        if age is None:
            return
        for section, sentence in _sentences(report):
            m = _AGE_RE.search(sentence.text)
            if m is None:
                continue
            stated = int(m.group(1) or m.group(2))
            if abs(stated - age) <= 1.5:
                continue
            yield self._flag(
                "header.age",
                f"{section.name.value.capitalize()} sentence {sentence.index + 1} gives age "
                f"{stated} ('{m.group(0)}'), but the image header gives {age:.0f} years: check that "
                "the report belongs to this patient.",
                0.8,
                section,
                sentence,
                "age",
                "patient_age_years",
                age,
            )

    def _view(self, report: ParsedReport, header: HeaderFacts) -> Iterator[Flag]:
        view = (header.view_position or "").upper()
        for name in _TECHNIQUE_SECTIONS:
            section = report.section(name)
            if section is None:
                continue
            for sentence in section.sentences:
                found = {(m.lastgroup or "").rstrip("2") for m in _VIEW_RE.finditer(sentence.text)}
                stated = {v.upper() for v in found if v in ("pa", "ap")}
                if view in _FRONTAL and stated and view not in stated:
                    yield self._flag(
                        "header.view",
                        f"{name.value.capitalize()} sentence {sentence.index + 1} describes a "
                        f"{'/'.join(sorted(stated))} view ('{sentence.text}'), but the image header "
                        f"gives view position {view}.",
                        0.7,
                        section,
                        sentence,
                        "view",
                        "view_position",
                        view,
                    )
                if header.portable is True and "PA" in stated:
                    yield self._flag(
                        "header.portable",
                        f"{name.value.capitalize()} sentence {sentence.index + 1} describes a PA "
                        f"view ('{sentence.text}'), but the header marks the image as portable, "
                        "which is taken AP.",
                        0.6,
                        section,
                        sentence,
                        "portable",
                        "portable",
                        True,
                    )
                if header.portable is False and "portable" in found and view == "PA":
                    yield self._flag(
                        "header.portable",
                        f"{name.value.capitalize()} sentence {sentence.index + 1} describes a "
                        f"portable or supine film ('{sentence.text}'), but the header gives a "
                        "non-portable PA image.",
                        0.55,
                        section,
                        sentence,
                        "portable",
                        "portable",
                        False,
                    )

    def _body_part(self, report: ParsedReport, header: HeaderFacts) -> Iterator[Flag]:
        part = header.body_part
        if part and not any(p in part for p in _CHEST_PARTS):
            yield self._flag(
                "header.body_part",
                f"The image header gives body part '{part}', but this is a chest radiograph "
                "report: check that the report was attached to the right images.",
                0.9,
                None,
                None,
                "body_part",
                "body_part",
                part,
                Severity.CRITICAL,
            )
        modality = header.modality
        if modality and modality not in _RADIOGRAPH_MODALITIES:
            yield self._flag(
                "header.modality",
                f"The image header gives modality '{modality}', but this is a radiograph "
                "report (CR/DX expected).",
                0.8,
                None,
                None,
                "modality",
                "modality",
                modality,
            )

    def _laterality(self, report: ParsedReport, header: HeaderFacts) -> Iterator[Flag]:
        lat = header.image_laterality
        if lat not in ("L", "R"):
            return
        expected = "left" if lat == "L" else "right"
        for section, sentence in _sentences(report):
            if section.name not in (
                SectionName.TECHNIQUE,
                SectionName.OTHER,
                SectionName.INDICATION,
            ):
                continue
            for m in _SIDE_PART_RE.finditer(sentence.text):
                if m.group("side").lower() == expected:
                    continue
                yield self._flag(
                    "header.laterality",
                    f"{section.name.value.capitalize()} sentence {sentence.index + 1} names the "
                    f"{m.group(0)} ('{sentence.text}'), but the image header gives image "
                    f"laterality {lat}.",
                    0.75,
                    section,
                    sentence,
                    "image_laterality",
                    "image_laterality",
                    lat,
                )
                break
