"""The edit vocabulary of the injector: word-level substitution rules, inserted findings, cues.

Each substitution rule finds a phrase in the findings and offers clinically plausible
replacements (left <-> right, "no X" <-> "there is X", mild <-> severe, upper <-> lower, numbers
and units, new/unchanged <-> increased). Pure data plus regexes, no randomness.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from medvlm.taxonomy import ErrorSubtype

Alternatives = Callable[[re.Match[str]], list[str]]


def match_case(source: str, replacement: str) -> str:
    """Give ``replacement`` the case pattern of ``source`` (UPPER, Capitalised or lower)."""
    if not replacement:
        return replacement
    if len(source) > 1 and source.isupper():
        return replacement.upper()
    if source[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement[:1].lower() + replacement[1:]


def _table(table: dict[str, list[str]]) -> Alternatives:
    def alternatives(match: re.Match[str]) -> list[str]:
        word = match.group(0)
        return [match_case(word, alt) for alt in table[word.lower()]]

    return alternatives


def _fixed(*options: str) -> Alternatives:
    def alternatives(match: re.Match[str]) -> list[str]:
        return [match_case(match.group(0), opt) for opt in options]

    return alternatives


def _words(table: Mapping[str, object]) -> str:
    return r"\b(?:" + "|".join(sorted(table, key=len, reverse=True)) + r")\b"


@dataclass(frozen=True, slots=True)
class SubstitutionRule:
    """Replace what ``pattern`` matches with one of ``alternatives(match)``.

    ``sentence_start``: the match only counts at the start of a sentence.
    """

    subtype: ErrorSubtype
    pattern: re.Pattern[str]
    alternatives: Alternatives
    sentence_start: bool = False


_SIDES = {"left": ["right"], "right": ["left"], "bilateral": ["left", "right"]}
_SEVERITY = {
    "mild": ["moderate", "severe"],
    "mildly": ["severely", "markedly"],
    "minimal": ["moderate", "extensive"],
    "moderate": ["mild", "severe"],
    "moderately": ["mildly", "severely"],
    "severe": ["mild", "minimal"],
    "severely": ["mildly"],
    "marked": ["mild"],
    "markedly": ["mildly"],
    "small": ["large"],
    "large": ["small"],
    "tiny": ["large"],
    "trace": ["large"],
    "extensive": ["minimal"],
}
_LOCATION = {
    "upper": ["lower"],
    "lower": ["upper"],
    "apex": ["base"],
    "apices": ["bases"],
    "apical": ["basilar"],
    "base": ["apex"],
    "bases": ["apices"],
    "basilar": ["apical"],
    "basal": ["apical"],
    "bibasilar": ["biapical"],
    "superior": ["inferior"],
    "inferior": ["superior"],
}
_INTERVAL = {
    "increased": ["decreased"],
    "decreased": ["increased"],
    "increasing": ["decreasing"],
    "decreasing": ["increasing"],
    "increase": ["decrease"],
    "decrease": ["increase"],
    "improved": ["worsened"],
    "worsened": ["improved"],
    "improving": ["worsening"],
    "worsening": ["improving"],
    "improvement": ["worsening"],
    "unchanged": ["increased", "decreased"],
    "stable": ["increased", "worsened"],
    "resolved": ["increased"],
}

_UNIT_SWAP = {"mm": "cm", "cm": "mm", "millimeter": "centimeter", "centimeter": "millimeter"}


def _format_number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def _measurement_alternatives(match: re.Match[str]) -> list[str]:
    number, space, unit = match.group("num"), match.group("sp"), match.group("unit")
    value = float(number)
    options = [
        f"{_format_number(value * 2)}{space}{unit}",
        f"{_format_number(value * 3)}{space}{unit}",
    ]
    if value >= 2:
        options.append(f"{_format_number(value / 2)}{space}{unit}")
    base = unit.lower().rstrip("s")
    swapped = _UNIT_SWAP[base] + ("s" if unit.lower().endswith("s") and len(unit) > 2 else "")
    options.append(f"{number}{space}{match_case(unit, swapped)}")
    return [o for o in options if o != match.group(0)]


_PLURAL_WORD = re.compile(r"\b[a-z]{3,}(?<!ss)(?<!us)(?<!is)s\b", re.IGNORECASE)


def _unnegate_start(match: re.Match[str]) -> list[str]:
    phrase = re.split(
        r"[,.;:]|\b(?:or|and|to|in|of|with)\b", match.string[match.end() :], maxsplit=1
    )[0]
    verb = "There are " if _PLURAL_WORD.search(phrase) else "There is "
    return [match_case(match.group(0), verb)]


_AN_NUMBER = re.compile(r"(?:8|11|18|8\d)(?!\d)")
_ARTICLE_BEFORE = re.compile(r"\b(an?)\s$", re.IGNORECASE)


def article_for(word: str) -> str:
    """``"an"`` before a vowel sound (vowel letter, 8, 11, 18, 80-89), else ``"a"``."""
    if word[:1].lower() in "aeiou" or _AN_NUMBER.match(word):
        return "an"
    return "a"


def fix_article(before: str, replacement: str) -> tuple[int, str]:
    """If ``before`` ends with "a "/"an " that no longer fits ``replacement``, fix it.

    Returns how many characters of ``before`` to replace too, and the new replacement.
    """
    match = _ARTICLE_BEFORE.search(before)
    if match is None or not replacement:
        return 0, replacement
    wanted = match_case(match.group(1), article_for(replacement))
    if wanted == match.group(1):
        return 0, replacement
    width = len(before) - match.start()
    return width, before[match.start() :].replace(match.group(1), wanted, 1) + replacement


_NEG_CUES = re.compile(
    r"\b(?:no|not|without|negative|clear|normal|unremarkable|free|resolved)\b", re.IGNORECASE
)

SUBSTITUTION_RULES: tuple[SubstitutionRule, ...] = (
    SubstitutionRule(
        ErrorSubtype.LATERALITY, re.compile(_words(_SIDES), re.IGNORECASE), _table(_SIDES)
    ),
    # "No pleural effusion." -> "There is pleural effusion."
    SubstitutionRule(
        ErrorSubtype.NEGATION,
        re.compile(r"\bno\s+(?:evidence\s+of\s+)?", re.IGNORECASE),
        _unnegate_start,
        sentence_start=True,
    ),
    # "There is no pneumothorax" -> "There is pneumothorax"
    SubstitutionRule(
        ErrorSubtype.NEGATION,
        re.compile(r"\bthere\s+(?:is|are)\s+no\b", re.IGNORECASE),
        lambda m: [m.group(0)[: -len("no")].rstrip()],
    ),
    SubstitutionRule(
        ErrorSubtype.NEGATION, re.compile(r"\bwithout\b", re.IGNORECASE), _fixed("with")
    ),
    SubstitutionRule(
        ErrorSubtype.NEGATION,
        re.compile(r"\bnegative\s+for\b", re.IGNORECASE),
        _fixed("positive for"),
    ),
    # "There is a small effusion" -> "There is no small effusion"
    SubstitutionRule(
        ErrorSubtype.NEGATION,
        re.compile(
            r"\bthere\s+(?:is|are)\s+(?:(?:a|an)\s+)?(?!no\b|not\b)(?=[a-z])", re.IGNORECASE
        ),
        lambda m: [match_case(m.group(0), "there is no ")],
    ),
    SubstitutionRule(
        ErrorSubtype.NEGATION,
        re.compile(r"\b(?:is|are)\s+(?:seen|noted|present|identified)\b", re.IGNORECASE),
        lambda m: [m.group(0).split()[0] + " not " + " ".join(m.group(0).split()[1:])],
    ),
    SubstitutionRule(
        ErrorSubtype.SEVERITY, re.compile(_words(_SEVERITY), re.IGNORECASE), _table(_SEVERITY)
    ),
    SubstitutionRule(
        ErrorSubtype.LOCATION,
        re.compile(_words(_LOCATION) + r"(?!\s+(?:limits?|normal)\b)", re.IGNORECASE),
        _table(_LOCATION),
    ),
    SubstitutionRule(
        ErrorSubtype.LOCATION,
        re.compile(r"\bmiddle\s+lobe\b", re.IGNORECASE),
        _fixed("lower lobe", "upper lobe"),
    ),
    SubstitutionRule(
        ErrorSubtype.MEASUREMENT,
        re.compile(
            r"(?<![\d.])(?P<num>\d+(?:\.\d+)?)(?P<sp>\s?)(?P<unit>mm|cm|millimeters?|centimeters?)\b",
            re.IGNORECASE,
        ),
        _measurement_alternatives,
    ),
    SubstitutionRule(
        ErrorSubtype.INTERVAL, re.compile(_words(_INTERVAL), re.IGNORECASE), _table(_INTERVAL)
    ),
    # "a new opacity" -> "an unchanged opacity"; "no new" is left alone
    SubstitutionRule(
        ErrorSubtype.INTERVAL,
        re.compile(r"\ba\s+new\b", re.IGNORECASE),
        _fixed("an unchanged", "a chronic"),
    ),
    SubstitutionRule(
        ErrorSubtype.INTERVAL,
        re.compile(r"(?<!\bno\s)(?<!\ba\s)\bnew\b", re.IGNORECASE),
        _fixed("unchanged", "chronic"),
    ),
)


@dataclass(frozen=True, slots=True)
class InsertCandidate:
    """A finding sentence the injector may insert, unless the findings already mention ``keys``."""

    sentence: str
    keys: tuple[str, ...]


INSERT_CANDIDATES: tuple[InsertCandidate, ...] = (
    InsertCandidate("There is a small left pleural effusion.", ("effusion",)),
    InsertCandidate("Small right pleural effusion.", ("effusion",)),
    InsertCandidate("There is a small right apical pneumothorax.", ("pneumothorax",)),
    InsertCandidate("Small left apical pneumothorax is present.", ("pneumothorax",)),
    InsertCandidate("Focal consolidation in the right lower lobe.", ("consolidation",)),
    InsertCandidate("Patchy airspace opacity in the left lower lobe.", ("opacity", "airspace")),
    InsertCandidate("There is a 1.2 cm nodule in the right upper lobe.", ("nodule",)),
    InsertCandidate("The heart is moderately enlarged.", ("cardiomegaly", "enlarged")),
    InsertCandidate(
        "Mild pulmonary vascular congestion and interstitial edema.", ("edema", "congestion")
    ),
    InsertCandidate("Mild bibasilar atelectasis.", ("atelectasis",)),
    InsertCandidate("There is an acute fracture of the left 6th rib.", ("fracture",)),
    InsertCandidate("A 3 cm mass is seen in the left hilum.", ("mass",)),
    InsertCandidate("Small hiatal hernia.", ("hernia",)),
    InsertCandidate("Free air under the right hemidiaphragm.", ("free air", "pneumoperitoneum")),
    InsertCandidate("Calcified granuloma in the left upper lobe.", ("granuloma",)),
    InsertCandidate("The mediastinum is widened.", ("mediastinum", "mediastinal")),
    InsertCandidate(
        "Right internal jugular central venous catheter with tip in the right atrium.",
        ("catheter", "line"),
    ),
    InsertCandidate("Hyperexpanded lungs consistent with emphysema.", ("emphysema", "hyperexpan")),
)

_POSITIVE_FINDING = re.compile(
    r"\b(?:opacit|effusion|atelectasis|pneumothorax|cardiomegaly|enlarge|nodul|consolidation|"
    r"edema|granulom|calcifi|scar|degenerative|fracture|deformit|hernia|emphysema|hyperinflat|"
    r"hyperexpan|infiltrat|mass|airspace|thickening|tortuous|catheter|tube|pacemaker|sternotomy|"
    r"clips|spondylosis|osteophyt|kyphosis|scoliosis|elevat|ectatic|cabg)",
    re.IGNORECASE,
)


NEGATED_SENTENCE = re.compile(r"\b(?:no|not|without|negative)\b", re.IGNORECASE)


def is_positive_finding(sentence: str) -> bool:
    """A sentence that asserts a finding (a finding word and no negation or normality cue)."""
    return bool(_POSITIVE_FINDING.search(sentence)) and not _NEG_CUES.search(sentence)


SEX_WORDS = {
    "male": "female", "female": "male", "man": "woman", "woman": "man",
    "he": "she", "she": "he", "his": "her", "her": "his",
}  # fmt: skip
SEX_WORD_RE = re.compile(_words(SEX_WORDS), re.IGNORECASE)
