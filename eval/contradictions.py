"""The honest yardstick's injector: one findings-vs-impression contradiction per report.

Sites are chosen WITHOUT the checker's parser (an import-linter contract forbids ``medvlm.reports``
and ``medvlm.checking`` here): plain term lists, side and grade words, and negation and hedge cue
lists written for this module, so a case the checker misreads is not silently left out (issue 12:
the old bench chose sites with the checker's own parser, which overstated recall). The IU reports'
hand-coded MeSH ``<major>`` tags are a second, independent source: a case whose concept, side and
grade agree with a major tag is marked ``mesh_confirmed`` and reported apart.

Every case is *text-detectable*: the other section states the counterpart that the edited sentence
now contradicts (the same process, its side / grade / presence), so a careful reader of the text
alone can see the error. Patterns (``Case.pattern``):

- ``laterality``: a side word swapped, or the side re-phrased ("on the left").
- ``severity``: a grade word moved at least two steps, or replaced by a range on the other end.
- ``negation_to_absent``: an asserted finding denied (in place, or by a denial paraphrase).
- ``negation_to_present``: a denied finding asserted (the cue dropped, or an assertion paraphrase).
- ``denial_vs_hedge``: a denied finding turned into a hedged diagnosis ("probably emphysema"),
  which still contradicts the flat denial in the other section (issue 12.2.2).
- ``insert``: a sentence asserting a finding that the other section flatly denies.
- ``insert_vs_normal``: a significant finding in FINDINGS while the impression calls the study
  normal (collapse, shift, mass, displaced fracture, septal lines, enlarged heart with congestion).
- ``removed``: a FINDINGS sentence removed whose finding the impression still reports (the
  text-side signal of issue 12.5; counted apart from the headline).

Injected text exists only in memory (the IU reports are CC BY-NC-ND): never write it out.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HEADLINE_PATTERNS",
    "PATTERNS",
    "Case",
    "Fact",
    "cases_for",
    "choose_case",
    "facts_of",
    "split_sentences",
    "yardstick_split",
]

PATTERNS = (
    "laterality",
    "severity",
    "negation_to_absent",
    "negation_to_present",
    "denial_vs_hedge",
    "insert",
    "insert_vs_normal",
    "removed",
)
HEADLINE_PATTERNS = PATTERNS[:-1]
"""Patterns in the headline recall (``removed`` is the separately reported text-side signal)."""

# -- term lists (written for this module; not the checker's knowledge base) ---------------------

# concept -> (regex, noun used in paraphrases, sided)
TERMS: dict[str, tuple[str, str, bool]] = {
    "effusion": (r"(?:pleural )?effusions?", "pleural effusion", True),
    "pneumothorax": (r"pneumothora(?:x|ces)", "pneumothorax", True),
    "consolidation": (
        r"consolidations?|airspace (?:disease|consolidation|opacit(?:y|ies))",
        "consolidation",
        True,
    ),
    "atelectasis": (r"atelecta(?:sis|tic changes?)|subsegmental atelectasis", "atelectasis", True),
    "opacity": (r"(?<!airspace )(?<!nodular )(?:opacit(?:y|ies)|densit(?:y|ies))", "opacity", True),
    "pneumonia": (r"pneumonias?", "pneumonia", True),
    "edema": (r"(?:pulmonary |interstitial )?edema", "pulmonary edema", False),
    "cardiomegaly": (r"cardiomegaly", "cardiomegaly", False),
    "nodule": (r"nodules?", "nodule", True),
    "mass": (r"masse?s?", "mass", True),
    "granuloma": (r"(?:calcified )?granulomas?", "granuloma", True),
    "fracture": (r"fractures?", "fracture", True),
    "emphysema": (r"emphysema(?:tous changes?)?", "emphysema", False),
    "infiltrate": (r"infiltrates?", "infiltrate", True),
    "scarring": (r"scarring", "scarring", True),
}
_TERM_RE = {
    concept: re.compile(rf"(?<![\w-])(?:{rx})(?![\w-])", re.I)
    for concept, (rx, _, _) in TERMS.items()
}
MESH_CONCEPTS: dict[str, str] = {
    "pleural effusion": "effusion",
    "pneumothorax": "pneumothorax",
    "consolidation": "consolidation",
    "airspace disease": "consolidation",
    "pulmonary atelectasis": "atelectasis",
    "opacity": "opacity",
    "density": "opacity",
    "pneumonia": "pneumonia",
    "pulmonary edema": "edema",
    "edema": "edema",
    "cardiomegaly": "cardiomegaly",
    "nodule": "nodule",
    "mass": "mass",
    "granuloma": "granuloma",
    "calcified granuloma": "granuloma",
    "fractures, bone": "fracture",
    "emphysema": "emphysema",
    "pulmonary emphysema": "emphysema",
    "infiltrate": "infiltrate",
    "cicatrix": "scarring",
}
ACUTE = frozenset({"effusion", "pneumothorax", "consolidation", "pneumonia", "edema"})
"""Findings that an impression of "no acute disease" denies."""
_SIDE_RE = re.compile(r"(?<![\w-])(left|right)(?![\w-])", re.I)
_BILATERAL_RE = re.compile(r"(?<![\w])(?:bilateral\w*|both|bibas\w*|biapical)(?![\w])", re.I)
# grade class: 0 trace, 1 mild/small, 2 moderate, 3 large/severe
GRADES: dict[str, int] = {
    "trace": 0,
    "minimal": 0,
    "tiny": 0,
    "small": 1,
    "mild": 1,
    "mildly": 1,
    "slight": 1,
    "moderate": 2,
    "moderately": 2,
    "large": 3,
    "severe": 3,
    "severely": 3,
    "marked": 3,
    "markedly": 3,
    "massive": 3,
    "extensive": 3,
}
_GRADE_RE = re.compile(r"(?<![\w-])(" + "|".join(GRADES) + r")(?![\w-])", re.I)
_DISTANT = {
    0: ("large", "moderate"),
    1: ("large", "severe"),
    2: ("trace", "minimal"),
    3: ("small", "mild"),
}
_MESH_GRADE = {"mild": 1, "small": 1, "minimal": 0, "moderate": 2, "severe": 3, "large": 3}

# -- cue lists (written for this module) ----------------------------------------------------------

_NEG_BEFORE = re.compile(
    r"(?<![\w])(?:no|not|without|negative for|free of|clear of|absence of|resolution of|"
    r"no evidence of|no signs? of)(?![\w])",
    re.I,
)
_NEG_AFTER = re.compile(
    r"^[^.;]{0,40}?(?<![\w])(?:(?:is|are|was|were) (?:not|no longer) (?!(?:entirely |completely |totally )?(?:excluded|ruled))\w+|(?:has|have) (?:since )?"
    r"resolved|resolved|(?:has|have) been removed|absent)(?![\w])",
    re.I,
)
_HEDGE = re.compile(
    r"(?<![\w])(?:possible|possibly|probable|probably|likely|may|might|could|suggest\w*|suspici\w*|"
    r"concern\w*|question\w*|questionable|cannot (?:be )?(?:excluded|ruled out|exclude|rule out)|"
    r"not (?:entirely |completely |totally )?(?:excluded|ruled out)|"
    r"versus|vs|differential|consider\w*|favou?r\w*|equivocal|presum\w*|represent\w*|reflect\w*|"
    r"worrisome|compatible with|consistent with|unclear|whether|uncertain|indeterminate|"
    r"atypical|nonspecific|or)(?![\w])",
    re.I,
)
_HISTORY = re.compile(
    r"(?<![\w])(?:prior|previous\w*|history|s/p|status post|healed|old|remote|chronic|removed|"
    r"resolved|resolution|again|known|stable|unchanged)(?![\w])",
    re.I,
)
_CLAUSE_STOP = re.compile(r"(?<![\w])(?:but|however|although|though|except|whereas)(?![\w])|[;:]")
_QUALIFIED_DENIAL = re.compile(
    r"(?<![\w])(?:large|significant|sizable|gross|new|other|additional|further|displaced|acute|"
    r"focal|definite|xxxx|___|residual|recurrent|obvious|frank|overt|visible|substantial|"
    r"rib|ribs|clavicle|spine|vertebral|lobar|segmental|confluent|active|dense|airspace|"
    r"discrete|apparent|appreciable|typical|suspicious|bony|osseous|destructive|otherwise)(?![\w])",
    re.I,
)
_NORMAL_IMPRESSION = re.compile(
    r"^(?:\d+\.\s*)?(?:no acute (?:cardiopulmonary|cardiothoracic|intrathoracic|pulmonary|chest|"
    r"radiographic)? ?(?:disease|abnormality|abnormalities|process|findings?|pathology)|"
    r"no active (?:cardiopulmonary |pulmonary )?disease|normal chest(?: x-?ray| radiographs?)?|"
    r"negative chest(?: x-?ray)?|no acute cardiopulmonary abnormality|normal (?:study|exam\w*))\.?$",
    re.I,
)

# -- paraphrases (written for this module) --------------------------------------------------------

DENIALS = (
    "No {noun}.",
    "There is no {noun}.",
    "No evidence of {noun}.",
    "{Noun} is not seen.",
    "No {noun} is identified.",
    "Negative for {noun}.",
)
ASSERTIONS = (
    "{Grade} {side}{noun}.",
    "There is {grade_a} {side}{noun}.",
    "{Side_c}{noun} is present.",
    "{Grade} {side}{noun} is noted.",
    "Interval development of {grade_l} {side}{noun}.",
)
HEDGES = (
    "{Appearance}, probably {noun}.",
    "Possible {side}{noun}.",
    "Findings may represent {noun}.",
    "{Appearance}, likely {noun}.",
    "Suspected {side}{noun}.",
    "{Appearance}, which could reflect {noun}.",
    "{Appearance}, suspicious for {noun}.",
)
_APPEARANCES = {
    "consolidation": "patchy {side}basilar opacity",
    "opacity": "streaky {side}basilar density",
    "atelectasis": "linear {side}basal opacities",
    "pneumonia": "{side}lower lobe airspace opacity",
    "effusion": "blunting of the {side}costophrenic angle",
    "pneumothorax": "a thin {side}apical pleural line",
    "edema": "vascular congestion with interstitial prominence",
    "cardiomegaly": "a prominent cardiac silhouette",
    "nodule": "a rounded {side}upper lobe density",
    "mass": "a lobulated {side}hilar contour",
    "emphysema": "overexpanded lungs",
    "infiltrate": "hazy {side}midlung opacity",
    "fracture": "cortical irregularity of a {side}rib",
    "granuloma": "a tiny {side}calcified density",
    "scarring": "{side}apical pleural thickening",
}
SIGNIFICANT_INSERTS = (
    ("collapse", "There is complete collapse of the {side} lower lobe."),
    ("collapse", "{Side_c}upper lobe collapse."),
    ("shift", "The trachea is deviated to the {side}."),
    ("shift", "There is mediastinal shift to the {side}."),
    ("mass", "There is a 4 cm mass in the {side} upper lobe."),
    ("mass", "A {side} hilar mass is present."),
    ("fracture", "There is a displaced fracture of the {side} posterior 6th rib."),
    ("heart", "The cardiac silhouette is enlarged with pulmonary vascular congestion."),
    ("septal", "Kerley B lines are present at both bases."),
    ("septal", "There are septal lines at the {side} base."),
    ("pneumothorax", "Moderate {side} pneumothorax."),
    ("effusion", "Large {side} pleural effusion."),
    ("consolidation", "Dense {side} lower lobe consolidation."),
)


@dataclass(frozen=True)
class Fact:
    """A finding as a plain term-list scan reads one sentence."""

    section: str
    sentence: int
    concept: str
    status: str  # asserted | hedged | denied | history
    side: str | None  # left | right | bilateral
    grade: int | None
    grade_word: str | None
    term_start: int
    term_end: int


@dataclass(frozen=True)
class Case:
    """One injected contradiction (in memory only)."""

    report_id: str
    pattern: str
    operator: str
    section: str
    findings: str
    impression: str
    modified: str
    counterpart: str
    concept: str
    mesh_confirmed: bool


def yardstick_split(report_id: str) -> str:
    """``"test"`` (about 30%, frozen: never tuned on) or ``"dev"``, from a hash of the report id."""
    digest = hashlib.sha256(f"radcheck-yardstick-v1:{report_id}".encode()).digest()
    return "test" if digest[0] < 77 else "dev"


_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9_(\"])|(?<=[.!?])(?=[A-Z][a-z])|\n+|;\s+")


def split_sentences(text: str) -> list[str]:
    """A plain sentence split (periods, line breaks, semicolons): this module's own, not medvlm's."""
    return [s.strip() for s in _SPLIT_RE.split(text) if s and any(c.isalnum() for c in s)]


_PRIOR_PSEUDO = re.compile(
    r"not (?:well )?(?:seen|visualized|identified|present) (?:on|in) (?:the )?(?:prior|previous)\w*",
    re.I,
)


def _status(sentence: str, start: int, end: int) -> str:
    sentence = _PRIOR_PSEUDO.sub(lambda m: "x" * len(m.group(0)), sentence)
    before = sentence[:start]
    stops = [m.end() for m in _CLAUSE_STOP.finditer(before)]
    clause_before = before[stops[-1] :] if stops else before
    if _NEG_BEFORE.search(clause_before) or _NEG_AFTER.search(sentence[end:]):
        return "denied"
    if _HEDGE.search(sentence):
        return "hedged"
    if _HISTORY.search(sentence):
        return "history"
    return "asserted"


def facts_of(section: str, sentences: Sequence[str]) -> list[Fact]:
    """Every term-list finding of a section's sentences with its status, side and grade."""
    out: list[Fact] = []
    for k, sentence in enumerate(sentences):
        sides = {m.group(1).lower() for m in _SIDE_RE.finditer(sentence)}
        bilateral = bool(_BILATERAL_RE.search(sentence)) or len(sides) > 1
        side = "bilateral" if bilateral else (next(iter(sides)) if sides else None)
        for concept, rx in _TERM_RE.items():
            for m in rx.finditer(sentence):
                grade_word = None
                window = sentence[max(0, m.start() - 40) : m.start()]
                found = list(_GRADE_RE.finditer(window))
                if len(found) == 1:  # "minimal small" or "mild to moderate": not one grade word
                    grade_word = found[-1].group(1)
                out.append(
                    Fact(
                        section,
                        k,
                        concept,
                        _status(sentence, m.start(), m.end()),
                        side if TERMS[concept][2] else None,
                        None if grade_word is None else GRADES[grade_word.lower()],
                        grade_word,
                        m.start(),
                        m.end(),
                    )
                )
                break
    return out


def _mesh_facts(tags: Iterable[str]) -> list[tuple[str, str | None, int | None]]:
    out = []
    for tag in tags:
        parts = [p.strip().lower() for p in tag.split("/")]
        concept = MESH_CONCEPTS.get(parts[0])
        if concept is None:
            continue
        side = next((p for p in parts if p in ("left", "right", "bilateral")), None)
        grade = next((_MESH_GRADE[p] for p in parts if p in _MESH_GRADE), None)
        out.append((concept, side, grade))
    return out


def _confirmed(mesh: list[tuple[str, str | None, int | None]], fact: Fact) -> bool:
    return any(
        c == fact.concept
        and (s is None or s == fact.side)
        and (g is None or fact.grade is None or g == fact.grade)
        for c, s, g in mesh
    )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _swap_case(src: str, word: str) -> str:
    return word.upper() if src.isupper() else (_cap(word) if src[:1].isupper() else word)


def _swap_sides(sentence: str, side: str) -> str:
    """Every left/right word of the sentence set to ``side`` (case kept)."""
    return _SIDE_RE.sub(lambda m: _swap_case(m.group(1), side), sentence)


def _join(sentences: Sequence[str]) -> str:
    return " ".join(s if s.rstrip().endswith((".", "!", "?")) else s + "." for s in sentences)


def _fill(template: str, concept: str, rng: random.Random) -> str:
    noun = TERMS.get(concept, (concept, concept, False))[1]
    sided = TERMS.get(concept, ("", "", True))[2]
    side = rng.choice(("left", "right")) if sided else ""
    grade = rng.choice(("small", "mild", "moderate"))
    article = "an" if grade[:1] in "aeiou" else "a"
    if concept in ("edema", "emphysema", "cardiomegaly", "atelectasis", "consolidation"):
        grade_a = grade
    else:
        grade_a = f"{article} {grade}"
    side_sp = f"{side} " if side else ""
    return (
        template.replace("{Appearance}", _cap(_APPEARANCES.get(concept, "an opacity")))
        .replace("{Grade}", _cap(grade))
        .replace("{grade_a}", grade_a)
        .replace("{grade_l}", grade)
        .replace("{Side_c}", _cap(side_sp) if side_sp else "")
        .replace("{side}", side_sp)
        .replace("{Noun}", _cap(noun))
        .replace("{noun}", noun)
        .replace("{Appearance}", _cap(_APPEARANCES.get(concept, "an opacity")))
        .replace("{side}", side_sp)
        .replace("  ", " ")
    )


def cases_for(
    report_id: str,
    findings: str,
    impression: str,
    tags: Sequence[str] = (),
    rng: random.Random | None = None,
) -> list[Case]:
    """Every applicable contradiction for one report (the caller samples one)."""
    rng = rng or random.Random(report_id)
    sections = {"findings": split_sentences(findings), "impression": split_sentences(impression)}
    if not sections["findings"] or not sections["impression"]:
        return []
    facts = {name: facts_of(name, sents) for name, sents in sections.items()}
    mesh = _mesh_facts(tags)
    out: list[Case] = []

    def make(
        pattern: str,
        op: str,
        section: str,
        new_sents: list[str],
        modified: str,
        other: str,
        f: Fact,
    ) -> None:
        texts = dict(sections)
        texts[section] = new_sents
        out.append(
            Case(
                report_id,
                pattern,
                op,
                section,
                _join(texts["findings"]),
                _join(texts["impression"]),
                modified,
                other,
                f.concept,
                _confirmed(mesh, f),
            )
        )

    for name, other_name in (("findings", "impression"), ("impression", "findings")):
        sents = sections[name]
        mine, theirs = facts[name], facts[other_name]
        for f in mine:
            if f.sentence >= len(sents):
                continue
            sent = sents[f.sentence]
            same_here = [g for g in mine if g.concept == f.concept and g.sentence != f.sentence]
            there = [g for g in theirs if g.concept == f.concept]
            described = [g for g in there if g.status in ("asserted", "hedged")]
            # laterality: one side in the sentence, the other section puts it on the same side
            if f.side in ("left", "right") and f.status in ("asserted", "hedged"):
                new_side = "right" if f.side == "left" else "left"
                if (
                    any(g.side == f.side for g in described)
                    and not any(g.side in (new_side, "bilateral") for g in described)
                    and not any(g.side == new_side for g in same_here)
                ):
                    swapped = _swap_sides(sent, new_side)
                    counterpart = next(sections[other_name][g.sentence] for g in described)
                    new = list(sents)
                    new[f.sentence] = swapped
                    make("laterality", "swap_word", name, new, swapped, counterpart, f)
                    ms = re.match(
                        rf"^(?:(?:there is|there are) )?(?:an? )?(?:{_SIDE_RE.pattern}) (\w[\w ]*?)\.?$",
                        sent,
                        re.I,
                    )
                    if ms:
                        phrase = f"{_cap(ms.group(2))} on the {new_side}."
                        new = list(sents)
                        new[f.sentence] = phrase
                        make("laterality", "rephrase_side", name, new, phrase, counterpart, f)
            # severity: the other section grades it in the same class
            if f.grade is not None and f.status in ("asserted", "hedged") and f.grade_word:
                graded = [g for g in described if g.grade is not None]
                if graded and all(g.grade == f.grade for g in graded):
                    counterpart = sections[other_name][graded[0].sentence]
                    for op, word in (
                        ("swap_grade", _DISTANT[f.grade][0]),
                        ("range", "moderate to large" if f.grade <= 1 else "trace to small"),
                    ):
                        if f.grade == 2 and op == "range":
                            continue
                        rx = re.compile(rf"(?<![\w-]){re.escape(f.grade_word)}(?![\w-])")
                        replaced = rx.sub(_swap_case(f.grade_word, word), sent, count=1)
                        if replaced == sent:
                            continue
                        new = list(sents)
                        new[f.sentence] = replaced
                        make("severity", op, name, new, replaced, counterpart, f)
            # negation to absent: asserted here and there (unhedged)
            asserted_there = [g for g in there if g.status == "asserted"]
            if (
                f.status == "asserted"
                and asserted_there
                and not any(g.status in ("asserted", "hedged") for g in same_here)
            ):
                counterpart = sections[other_name][asserted_there[0].sentence]
                noun = TERMS[f.concept][1]
                para = rng.choice(DENIALS).replace("{Noun}", _cap(noun)).replace("{noun}", noun)
                new = list(sents)
                new[f.sentence] = para
                make("negation_to_absent", "denial_paraphrase", name, new, para, counterpart, f)
                inplace = re.sub(
                    r"^(There (?:is|are)) (?:an? )?", r"\1 no ", sent, count=1, flags=re.I
                )
                if inplace == sent:
                    inplace = "No " + sent[:1].lower() + sent[1:]
                    inplace = re.sub(r"^No (?:an?|the) ", "No ", inplace)
                new = list(sents)
                new[f.sentence] = inplace
                make("negation_to_absent", "insert_no", name, new, inplace, counterpart, f)
            # denied here, flatly denied there: assert it (or hedge it) here
            flat_there = [
                g
                for g in there
                if g.status == "denied"
                and not _QUALIFIED_DENIAL.search(sections[other_name][g.sentence][: g.term_start])
            ]
            flat_here = f.status == "denied" and not _QUALIFIED_DENIAL.search(sent[: f.term_start])
            normal_there = (
                [s for s in sections[other_name] if _NORMAL_IMPRESSION.match(s.strip())]
                if f.concept in ACUTE and other_name == "impression"
                else []
            )
            if (
                flat_here
                and (flat_there or normal_there)
                and not any(g.status != "denied" for g in same_here + there)
            ):
                counterpart = (
                    sections[other_name][flat_there[0].sentence] if flat_there else normal_there[0]
                )
                dropped = re.sub(
                    r"^(?:there (?:is|are) )?no (?:evidence of )?", "", sent, count=1, flags=re.I
                )
                if dropped != sent:
                    dropped = _cap(dropped)
                    new = list(sents)
                    new[f.sentence] = dropped
                    make("negation_to_present", "drop_cue", name, new, dropped, counterpart, f)
                para = _fill(rng.choice(ASSERTIONS), f.concept, rng)
                new = list(sents)
                new[f.sentence] = para
                make("negation_to_present", "assertion_paraphrase", name, new, para, counterpart, f)
                hedge = _fill(rng.choice(HEDGES), f.concept, rng)
                new = list(sents)
                new[f.sentence] = hedge
                make("denial_vs_hedge", "hedge_paraphrase", name, new, hedge, counterpart, f)
        # insert: a finding the other section flatly denies, this section never mentions
        denied_there: dict[str, str] = {}
        for g in facts[other_name]:
            other_sent = sections[other_name][g.sentence]
            if g.status == "denied" and not _QUALIFIED_DENIAL.search(other_sent[: g.term_start]):
                denied_there.setdefault(g.concept, other_sent)
        mentioned = {g.concept for g in facts[name]} | {
            g.concept for g in facts[other_name] if g.status != "denied"
        }
        for concept, counterpart in denied_there.items():
            if concept in mentioned:
                continue
            f = Fact(other_name, 0, concept, "denied", None, None, None, 0, 0)
            for op, templates in (("assertion", ASSERTIONS), ("hedged", HEDGES)):
                sentence = _fill(rng.choice(templates), concept, rng)
                new = list(sents)
                new.insert(rng.randint(0, len(new)), sentence)
                pattern = "insert" if op == "assertion" else "denial_vs_hedge"
                make(pattern, f"insert_{op}", name, new, sentence, counterpart, f)
    # significant finding vs a normal impression
    normal = [s for s in sections["impression"] if _NORMAL_IMPRESSION.match(s.strip())]
    if normal and len(sections["impression"]) == 1:
        for kind, template in SIGNIFICANT_INSERTS:
            side = rng.choice(("left", "right"))
            sentence = template.replace("{Side_c}", _cap(side) + " ").replace("{side}", side)
            new = list(sections["findings"])
            new.insert(rng.randint(0, len(new)), sentence)
            f = Fact("findings", 0, kind, "asserted", side, None, None, 0, 0)
            make("insert_vs_normal", f"insert_{kind}", "findings", new, sentence, normal[0], f)
    # removed: a FINDINGS sentence whose finding the impression reports
    for f in facts["findings"]:
        if f.status != "asserted" or f.sentence >= len(sections["findings"]):
            continue
        if len(sections["findings"]) < 2:
            break
        there = [
            g for g in facts["impression"] if g.concept == f.concept and g.status == "asserted"
        ]
        others = [
            g for g in facts["findings"] if g.concept == f.concept and g.sentence != f.sentence
        ]
        if there and not others:
            new = [s for k, s in enumerate(sections["findings"]) if k != f.sentence]
            counterpart = sections["impression"][there[0].sentence]
            make("removed", "remove_sentence", "findings", new, "", counterpart, f)
    return out


def choose_case(cases: Sequence[Case], rng: random.Random) -> Case | None:
    """One case: a pattern uniformly among those available, then an operator, then a site."""
    if not cases:
        return None
    by_pattern: dict[str, list[Case]] = {}
    for c in cases:
        by_pattern.setdefault(c.pattern, []).append(c)
    pattern = rng.choice(sorted(by_pattern))
    options = by_pattern[pattern]
    by_op: dict[str, list[Case]] = {}
    for c in options:
        by_op.setdefault(c.operator, []).append(c)
    op = rng.choice(sorted(by_op))
    return rng.choice(by_op[op])
