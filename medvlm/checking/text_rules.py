"""Text rules: contradictions between and inside sections, measurements, interval wording.

Every rule compares parsed mentions (concept, presence, side, zone, grade, interval) and points its
flag at the sentence most likely to be wrong: the one the rest of the report disagrees with (a vote
over the other mentions of the same concept), the FINDINGS sentence on a tie across sections, and the
asserting sentence on a tie inside a section or against a generic denial ("no acute disease").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from medvlm.checking.evidence import Item, make_flag
from medvlm.checking.tally import MAX_PARTNERS, MAX_SCANNED, Tally
from medvlm.checking.types import Flag
from medvlm.prompts.knowledge import Category, KnowledgeBase
from medvlm.reports import ParsedReport, Presence, SectionName, Side
from medvlm.reports.vocabulary import (
    CHRONIC,
    OTHERWISE,
    PLACEHOLDERS,
    WEAK_BROAD_DENIAL,
    WEAK_DENIAL,
)
from medvlm.taxonomy import ErrorSubtype

__all__ = ["TEXT_RULESET_VERSION", "TextRules"]

TEXT_RULESET_VERSION = "1.0"
_COMPARED = (SectionName.FINDINGS, SectionName.IMPRESSION)
_DENIAL_LIST = frozenset(
    {
        "pneumothorax",
        "pleural_effusion",
        "consolidation",
        "lung_opacity",
        "edema",
        "pneumonia",
        "infiltrate",
        "lung_lesion",
        "fracture",
        "cardiomegaly",
        "lymphadenopathy",
    }
)
_DISJUNCTION = re.compile(r"(?<![\w/])(?:or|nor)(?![\w/])", re.I)
_WITH = re.compile(r"(?<![\w])with(?![\w])", re.I)
_ANY_NEGATION = re.compile(r"(?<![\w])(?:no|not|without|negative|free|clear)(?![\w])", re.I)
_POSITIVE_FOR = re.compile(r"(?<![\w])positive for(?![\w])", re.I)
_EXCEPTION = re.compile(
    r"(?<![\w])(?:except|exception|other than|aside from|apart from|but|otherwise|besides|"
    r"although|though|however)(?![\w])",
    re.I,
)
_SEE_ABOVE = re.compile(r"(?<![\w])(?:see|as|described|noted) above(?![\w])", re.I)
_NOT_NEW = re.compile(
    r"(?<![\w])(?:calcified|unchanged|stable|chronic|old|previous|prior|again|known|healed|"
    r"scar|scarring|granulomas?|granulomatous|fibrosis|fibrotic)(?![\w])",
    re.I,
)
_GENERIC_PARENTS = frozenset({"no_acute_disease", "normal_study"})
_NO_COMPARISON = re.compile(
    r"^\s*(?:none|no prior|no previous|no comparison|no prior (?:studies|study|exam|examinations?|"
    r"films?|radiographs?)|not available|n/?a|none available)\b",
    re.I,
)
_INTERVAL_WORDING = re.compile(
    r"(?<![\w])(?:(?:increas|decreas)(?:ed|ing) (?:since|from|compared)|improv(?:ed|ing)|"
    r"worsen(?:ed|ing)|unchanged|interval(?:ly)?|since (?:the )?(?:prior|previous|last)|compared (?:to|with) "
    r"(?:the )?(?:prior|previous)|again (?:seen|noted|demonstrated)|re-?demonstrated|"
    r"(?:from|on|than) (?:the )?(?:prior|previous) (?:exam|examination|study|radiograph|film)s?|"
    r"no (?:significant )?change)(?![\w])",
    re.I,
)
_CONFLICTING_INTERVALS = {
    frozenset({"worse", "better"}),
    frozenset({"worse", "unchanged"}),
    frozenset({"better", "unchanged"}),
    frozenset({"new", "unchanged"}),
    frozenset({"new", "persistent"}),
    frozenset({"new", "better"}),
}
_MAX_LESION_MM = 400.0
_MAX_DEVICE_DISTANCE_MM = 150.0


def _zones(item: Item) -> frozenset[str]:
    return item.mention.zones - {"mid"}


def _reads_like_denial(item: Item) -> bool:
    """A sentence shaped like a denial list: a disjunction of findings or "positive for"."""
    text = item.sentence.text
    return bool(_DISJUNCTION.search(text) or _POSITIVE_FOR.search(text))


def _redacted_before(item: Item) -> bool:
    """A redaction right before the term may hide a hedge ("XXXX opacity"): not a firm assertion."""
    rel = item.mention.start - item.sentence.start
    return item.sentence.text[max(0, rel - 6) : rel].strip().lower().endswith(tuple(PLACEHOLDERS))


# Policy (issue 12.2.3): a redaction before an asserted term ("XXXX atelectasis") is read as an
# adjective the de-identification removed (IU redacts words, not negations), so the assertion
# stands against a flat denial of that finding ("There is no atelectasis"), but not against a
# blanket normal phrase ("The lungs are clear"). A redaction inside a denial ("no XXXX effusion")
# still qualifies the denial (see vocabulary.WEAK_DENIAL): the hidden word may be "large" or "new".


def _side_accept(side: Side | None) -> Callable[[Hashable], bool]:
    """A tally filter: sides compatible with ``side`` (no side is compatible with any)."""
    return lambda v: side is None or not isinstance(v, Side) or side.compatible(v)


def _is(value: object) -> Callable[[Hashable], bool]:
    return lambda v: v is value


def _meets(values: frozenset[Any]) -> Callable[[Hashable], bool]:
    return lambda v: isinstance(v, frozenset) and bool(v & values)


def _is_number(value: float) -> Callable[[Hashable], bool]:
    return lambda v: v == value


def _size_mm(item: Item) -> float | None:
    m = item.mention.measurement
    return None if m is None else m.value_mm


def _sizes_differ(x: float | None, y: float | None) -> bool:
    if x is None or y is None:
        return False
    big, small = max(x, y), min(x, y)
    return not (big - small <= 2.0 or big <= small * 1.25)


def _hedged(item: Item) -> bool:
    """Hedged as a diagnosis (probable, likely, suspected, may represent), not merely left open
    ("cannot be excluded") or asked about ("evaluate for")."""
    m = item.mention
    return m.presence is Presence.UNCERTAIN and m.hedge == "possible" and not m.historical


def _sides_ok(a: Item, b: Item) -> bool:
    sa, sb = a.mention.laterality, b.mention.laterality
    return sa is None or sb is None or sa.compatible(sb)


def _disjoint(x: frozenset[Any], y: frozenset[Any]) -> bool:
    """Both given and sharing nothing (two grades, two zones)."""
    return bool(x and y and not x & y)


def _sides_conflict(x: Side | None, y: Side | None) -> bool:
    return x is not None and y is not None and not x.compatible(y)


def _same_named_side(a: Item, b: Item) -> bool:
    """A location is only comparable when both name the same side (bilateral names none)."""
    sa, sb = a.mention.laterality, b.mention.laterality
    return (
        sa is not None and sb is not None and sa.compatible(sb) and Side.BILATERAL not in (sa, sb)
    )


@dataclass(frozen=True)
class _CrossSectionRule:
    """One attribute of a finding that FINDINGS and IMPRESSION must agree on.

    ``value`` reads it off a mention, ``conflict`` says when two values contradict, ``agrees``
    builds the tally filter for mentions supporting a value, ``comparable`` the other attributes
    that must not already tell two findings apart, ``both_sections`` whether a section holding
    both values is looked for in both sections of the pair (else in the FINDINGS one only), and
    ``message`` words the flag (finding name, flagged mention, the one it contradicts).
    """

    what: str
    subtype: ErrorSubtype
    confidence: float
    same_group: bool
    value: Callable[[Item], Any]
    conflict: Callable[[Any, Any], bool]
    agrees: Callable[[Any], Callable[[Hashable], bool]]
    comparable: Callable[[Item, Item], bool]
    both_sections: bool
    message: Callable[[str, Item, Item], str]


_LATERALITY = _CrossSectionRule(
    what="laterality",
    subtype=ErrorSubtype.LATERALITY,
    confidence=0.85,
    same_group=True,
    value=lambda i: i.mention.laterality,
    conflict=_sides_conflict,
    agrees=_is,
    comparable=lambda a, b: (
        not _disjoint(_zones(a), _zones(b)) and not _disjoint(a.mention.grades, b.mention.grades)
    ),
    both_sections=True,
    message=lambda name, t, o: (
        f"{t.where().capitalize()} puts {name} on the {t.mention.laterality} "
        f"('{t.sentence.text}'), but {o.where()} puts it on the {o.mention.laterality} "
        f"('{o.sentence.text}')."
    ),
)
_SEVERITY = _CrossSectionRule(
    what="severity",
    subtype=ErrorSubtype.SEVERITY,
    confidence=0.75,
    same_group=False,
    value=lambda i: i.mention.grades,
    conflict=_disjoint,
    agrees=_meets,
    comparable=lambda a, b: _sides_ok(a, b) and not _disjoint(_zones(a), _zones(b)),
    both_sections=False,
    message=lambda name, t, o: (
        f"{t.where().capitalize()} grades {name} as '{t.mention.severity}' "
        f"('{t.sentence.text}'), but {o.where()} grades it '{o.mention.severity}' "
        f"('{o.sentence.text}')."
    ),
)
_LOCATION = _CrossSectionRule(
    what="location",
    subtype=ErrorSubtype.LOCATION,
    confidence=0.65,
    same_group=True,
    value=_zones,
    conflict=_disjoint,
    agrees=_meets,
    comparable=_same_named_side,
    both_sections=True,
    message=lambda name, t, o: (
        f"{t.where().capitalize()} places {name} in the {t.mention.location} zone "
        f"('{t.sentence.text}'), but {o.where()} places it in the {o.mention.location} zone "
        f"('{o.sentence.text}')."
    ),
)
"""The cross-section rules (:meth:`TextRules._cross_section`); a new attribute is a new row."""


class TextRules:
    """The text rule set over one knowledge base (stateless after construction)."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self._kb = kb

    def run(self, report: ParsedReport) -> list[Flag]:
        items = [
            Item(name, sentence, mention)
            for name in _COMPARED
            if (section := report.section(name)) is not None
            for sentence, mention in section.mentions()
        ]
        flags: list[Flag] = []
        flags.extend(self._presence(items))
        flags.extend(self._asserted_denial_lists(items))
        flags.extend(self._significant_not_in_impression(items))
        flags.extend(self._cross_section(_LATERALITY, items))
        flags.extend(self._dominant_side(items))
        flags.extend(self._resolved_side(items))
        flags.extend(self._cross_section(_SEVERITY, items))
        flags.extend(self._cross_section(_LOCATION, items))
        flags.extend(self._interval_conflicts(items))
        flags.extend(self._interval_without_comparison(report))
        flags.extend(self._measurements(items))
        return flags

    # -- presence (negation flips, inserted findings the report denies elsewhere) -------------

    def _weak_denial(self, denial: Item, asserted: Item) -> bool:
        n, p = denial.mention, asserted.mention
        if OTHERWISE in n.qualifiers:
            return True
        if n.normal_phrase and (
            _redacted_before(asserted)
            or _NOT_NEW.search(asserted.sentence.text)
            or (p.grades and min(p.grades) == 0)
        ):
            # a blanket normal phrase ("the lungs are clear") next to a redacted, chronic or
            # minimal opacity is how reports describe scars: not a contradiction
            return True
        narrow = n.concept == p.concept and not self._kb[p.concept].broad
        weak = WEAK_DENIAL if narrow else WEAK_DENIAL | WEAK_BROAD_DENIAL
        if self._kb[p.concept].acute:
            weak = weak - {"acute"}  # "no acute pneumothorax": a pneumothorax is always acute
        if (n.qualifiers & weak) - p.qualifiers:
            return True
        if n.grades and max(n.grades) == 3 and not (n.grades & p.grades):
            return True  # "no large effusion" allows a small one
        if n.grades and p.grades and not (n.grades & p.grades):
            return True
        if n.concept in _GENERIC_PARENTS:
            chronic = bool(p.qualifiers & CHRONIC) or p.interval == "unchanged"
            if chronic or (p.grades and min(p.grades) == 0):
                return True
        return not _sides_ok(denial, asserted)

    def _covered(self, denied: str, asserted: Item) -> bool:
        if self._kb.covers(denied, asserted.mention.concept):
            return True
        entry = self._kb[asserted.mention.concept]
        return denied == "no_acute_disease" and bool(entry.acute_when & asserted.mention.qualifiers)

    def _denies(self, denial: Item, asserted: Item) -> bool:
        return (
            denial.denied
            and self._covered(denial.mention.concept, asserted)
            and not self._weak_denial(denial, asserted)
        )

    @staticmethod
    def _same_sentence_ok(n: Item, p: Item) -> bool:
        """Inside one sentence only "lungs are clear with focal consolidation" is a contradiction
        (a normal phrase, then "with" and an assertion it covers; no "except")."""
        if not n.mention.normal_phrase or _EXCEPTION.search(n.sentence.text):
            return False
        between = n.sentence.text[
            n.mention.end - n.sentence.start : p.mention.start - n.sentence.start
        ]
        return bool(_WITH.search(between))

    def _denial_key(self, p: Item) -> tuple[object, ...]:
        """Everything of an asserted mention that :meth:`_denies` reads."""
        m = p.mention
        return (m.concept, m.qualifiers, m.grades, m.laterality, m.interval, _redacted_before(p))

    def _denials_of(
        self,
        p: Item,
        denied_by_concept: dict[str, list[tuple[int, Item]]],
        cache: dict[tuple[object, ...], tuple[list[Item], Counter[int]]],
    ) -> tuple[list[Item], Counter[int]]:
        """The denials that deny ``p`` (document order) and their count per sentence, computed
        once per distinct kind of asserted mention."""
        key = self._denial_key(p)
        hit = cache.get(key)
        if hit is None:
            found = sorted(
                (
                    (k, n)
                    for concept, group in denied_by_concept.items()
                    if self._covered(concept, p)
                    for k, n in group
                    if not self._weak_denial(n, p)
                ),
                key=lambda kn: kn[0],
            )
            denials = [n for _, n in found]
            hit = (denials, Counter(id(n.sentence) for n in denials))
            cache[key] = hit
        return hit

    def _presence(self, items: list[Item]) -> Iterator[Flag]:
        kb = self._kb
        denied_by_concept: dict[str, list[tuple[int, Item]]] = {}
        asserted = Tally()
        for k, i in enumerate(items):
            if i.denied:
                denied_by_concept.setdefault(i.mention.concept, []).append((k, i))
            elif i.asserted:
                asserted.add(i.mention.concept, i.mention.laterality, i)
        cache: dict[tuple[object, ...], tuple[list[Item], Counter[int]]] = {}
        for p in items:
            hedged = _hedged(p)
            if not (p.asserted or hedged) or kb[p.mention.concept].category is Category.GENERIC:
                continue
            denials, per_sentence = self._denials_of(p, denied_by_concept, cache)
            side = p.mention.laterality
            partners = 0
            for n in denials:
                if n.sentence is p.sentence and not self._same_sentence_ok(n, p):
                    continue
                partners += 1
                if partners > MAX_PARTNERS:
                    break
                generic = n.mention.concept != p.mention.concept
                if hedged and n.mention.concept != p.mention.concept and n.mention.normal_phrase:
                    continue  # "possible early pneumonia" next to "the lungs are clear": a
                    # blanket normal phrase is not set against a hedge
                for_p = asserted.count(
                    p.mention.concept,
                    _side_accept(side),
                    (p, n),
                )
                for_n = len(denials) - per_sentence[id(p.sentence)]
                if n.sentence is not p.sentence:
                    for_n -= per_sentence[id(n.sentence)]
                if generic or for_n > for_p:
                    target, other = p, n
                elif for_p > for_n:
                    target, other = n, p
                elif p.section is not n.section:
                    target, other = (p, n) if p.section is SectionName.FINDINGS else (n, p)
                else:
                    target, other = p, n
                name = kb[p.mention.concept].name
                if generic and not hedged:
                    # a denial list left without its "no" ("There is pneumothorax or effusion",
                    # "lungs are clear with consolidation") is a negation flip, else an insertion
                    flipped = n.sentence is p.sentence or _reads_like_denial(p)
                    subtype = ErrorSubtype.NEGATION if flipped else ErrorSubtype.INSERT_FINDING
                    rule = "text.presence.generic_denial"
                    message = (
                        f"{p.where().capitalize()} reports {name} ('{p.sentence.text}'), but "
                        f"{n.where()} calls the study normal for it ('{n.sentence.text}')."
                    )
                    confidence = 0.7
                else:
                    subtype = ErrorSubtype.NEGATION
                    rule = "text.presence.contradiction"
                    state = "present" if target is p else "absent"
                    message = (
                        f"{target.where().capitalize()} states {name} is {state} "
                        f"('{target.sentence.text}'), but {other.where()} says the opposite "
                        f"('{other.sentence.text}')."
                    )
                    confidence = 0.85 if p.section is not n.section else 0.75
                    if hedged:
                        # a flat denial against a hedged diagnosis ("no emphysema" vs "probably
                        # emphysema"): a contradiction, at a lower confidence
                        rule = "text.presence.denial_vs_hedge"
                        state = "possibly present" if target is p else "absent"
                        message = (
                            f"{target.where().capitalize()} states {name} is {state} "
                            f"('{target.sentence.text}'), but {other.where()} "
                            + ("flatly denies it" if target is p else "suggests it")
                            + f" ('{other.sentence.text}')."
                        )
                        confidence = 0.6
                yield make_flag(
                    subtype=subtype,
                    rule_id=rule,
                    rule_version=TEXT_RULESET_VERSION,
                    message=message,
                    confidence=confidence,
                    item=target,
                    concept=p.mention.concept,
                    other=other,
                    extra={"votes": {"asserted": for_p, "denied": for_n}},
                )

    def _asserted_denial_lists(self, items: list[Item]) -> Iterator[Flag]:
        """A sentence asserting a disjunction of the findings reports list when they deny them
        ("There is focal consolidation, pneumothorax or large pleural effusion"): the "no" is
        missing. Hedged pairs ("atelectasis or infiltrate") do not count."""
        by_sentence: dict[int, list[Item]] = {}
        for item in items:
            by_sentence.setdefault(id(item.sentence), []).append(item)
        for group in by_sentence.values():
            sentence = group[0].sentence
            asserted = [i for i in group if i.asserted and i.mention.concept in _DENIAL_LIST]
            concepts = {i.mention.concept for i in asserted}
            if len(concepts) < 2 or any(i.mention.presence is not Presence.PRESENT for i in group):
                continue
            if not _DISJUNCTION.search(sentence.text) or _ANY_NEGATION.search(sentence.text):
                continue
            if "pneumothorax" not in concepts and len(concepts) < 3:
                continue
            names = ", ".join(self._kb[c].name for c in sorted(concepts))
            yield make_flag(
                subtype=ErrorSubtype.NEGATION,
                rule_id="text.presence.asserted_denial_list",
                rule_version=TEXT_RULESET_VERSION,
                message=(
                    f"{asserted[0].where().capitalize()} asserts a list of alternatives "
                    f"({names}) the way reports deny them ('{sentence.text}'): a 'no' or "
                    "'without' may be missing."
                ),
                confidence=0.6,
                item=asserted[0],
            )

    def _significant(self, item: Item) -> bool:
        m = item.mention
        for condition in self._kb[m.concept].significant_when:
            kind, _, value = condition.partition(":")
            if condition == "always" or (condition == "ungraded" and not m.grades):
                return True
            if condition.startswith("grade>="):
                if m.grades and min(m.grades) >= int(condition[7:]):
                    return True
            elif condition.startswith("size>="):
                size = None if m.measurement is None else m.measurement.value_mm
                if size is not None and size >= float(condition[6:-2]):
                    return True
            elif (kind == "term" and value in m.text.lower()) or (
                kind == "qualifier" and value in m.qualifiers
            ):
                return True
        return False

    def _significant_not_in_impression(self, items: list[Item]) -> Iterator[Flag]:
        """A significant new finding (a mass, moderate cardiomegaly, an acute fracture) in the
        findings while the impression calls the study normal and never mentions it."""
        impression = [i for i in items if i.section is SectionName.IMPRESSION]
        normal = [
            i for i in impression
            if i.denied and i.mention.concept in _GENERIC_PARENTS
            and not i.mention.qualifiers & {OTHERWISE, *PLACEHOLDERS}
        ]  # fmt: skip
        if not normal or any(_SEE_ABOVE.search(i.sentence.text) for i in impression):
            return
        kb = self._kb
        impression_groups = {self._group(i.mention.concept) for i in impression}
        denied: dict[tuple[object, ...], bool] = {}
        for item in items:
            m = item.mention
            if item.section is not SectionName.FINDINGS or not item.asserted:
                continue
            if m.qualifiers & CHRONIC or m.interval in ("unchanged", "persistent"):
                continue
            if _NOT_NEW.search(item.sentence.text) or not self._significant(item):
                continue
            if self._group(m.concept) in impression_groups:
                continue
            key = self._denial_key(item)
            if key not in denied:
                denied[key] = any(self._denies(n, item) for n in normal[:MAX_SCANNED])
            if denied[key]:
                continue  # already flagged as a contradiction of the generic denial
            yield make_flag(
                subtype=ErrorSubtype.INSERT_FINDING,
                rule_id="text.presence.significant_not_in_impression",
                rule_version=TEXT_RULESET_VERSION,
                message=(
                    f"{item.where().capitalize()} reports {kb[m.concept].name} "
                    f"('{item.sentence.text}'), which the impression does not mention while it "
                    f"calls the study normal ('{normal[0].sentence.text}')."
                ),
                confidence=0.55,
                item=item,
                other=normal[0],
            )

    # -- cross-section attribute conflicts ------------------------------------------------------

    def _group(self, concept: str) -> str:
        """The key under which :meth:`KnowledgeBase.same_side_group` holds: a side group or the
        concept itself."""
        group = self._kb[concept].side_group
        return f"group:{group}" if group is not None else f"concept:{concept}"

    def _pairs(
        self,
        items: list[Item],
        same_group: bool,
        attribute: Callable[[Item], Hashable],
        conflict: Callable[[Any, Any], bool],
    ) -> Iterator[tuple[Item, Item]]:
        """FINDINGS x IMPRESSION mentions that are not denied (asserted or hedged: a hedged
        finding still has a side and a grade that must agree), of the same concept (or side
        group), whose ``attribute`` values ``conflict``. Impression mentions are bucketed by
        attribute value so that only conflicting candidates are visited; each FINDINGS mention is
        paired with at most :data:`MAX_PARTNERS` of them (near-linear on pasted-over reports)."""

        def key(item: Item) -> str:
            c = item.mention.concept
            return self._group(c) if same_group else c

        buckets: dict[str, dict[Hashable, list[Item]]] = {}
        for b in items:
            if b.section is SectionName.IMPRESSION and b.described:
                buckets.setdefault(key(b), {}).setdefault(attribute(b), []).append(b)
        for a in items:
            if a.section is not SectionName.FINDINGS or not a.described:
                continue
            va = attribute(a)
            n = 0
            for vb, group in buckets.get(key(a), {}).items():
                if not conflict(va, vb):
                    continue
                for b in group[:MAX_PARTNERS]:
                    yield a, b
                    n += 1
                if n >= MAX_PARTNERS:
                    break

    def _pick(self, a: Item, b: Item, for_a: int, for_b: int) -> tuple[Item, Item]:
        if for_b > for_a:
            return a, b
        if for_a > for_b:
            return b, a
        return (a, b) if a.section is SectionName.FINDINGS else (b, a)

    def _cross_section(self, rule: _CrossSectionRule, items: list[Item]) -> Iterator[Flag]:
        """One attribute that FINDINGS and IMPRESSION disagree on (a side, a grade, a zone): the
        pairs :meth:`_pairs` finds, unless the rule's other attributes say they are two findings
        or one section describes both values; the flag goes to the less supported side."""
        key = self._group if rule.same_group else (lambda concept: concept)
        tally = Tally()
        for i in items:
            value = rule.value(i)
            if i.described and value is not None and value != frozenset():
                tally.add((i.section, key(i.mention.concept)), value, i)
        for a, b in self._pairs(items, rule.same_group, rule.value, rule.conflict):
            if not rule.comparable(a, b):
                continue
            va, vb = rule.value(a), rule.value(b)
            g = key(a.mention.concept)
            if tally.count((a.section, g), rule.agrees(vb), (a, b)) or (
                rule.both_sections and tally.count((b.section, g), rule.agrees(va), (a, b))
            ):
                continue  # both values described in one section: likely two findings, not a slip
            for_a = sum(tally.count((sec, g), rule.agrees(va), (a, b)) for sec in _COMPARED)
            for_b = sum(tally.count((sec, g), rule.agrees(vb), (a, b)) for sec in _COMPARED)
            target, other = self._pick(a, b, for_a, for_b)
            yield make_flag(
                subtype=rule.subtype,
                rule_id=f"text.{rule.what}.findings_impression",
                rule_version=TEXT_RULESET_VERSION,
                message=rule.message(self._kb[target.mention.concept].name, target, other),
                confidence=rule.confidence,
                item=target,
                other=other,
            )

    def _side_flag(self, target: Item, other: Item, t_side: Side, o_side: Side, what: str) -> Flag:
        kb = self._kb
        return make_flag(
            subtype=ErrorSubtype.LATERALITY,
            rule_id=f"text.laterality.{what}",
            rule_version=TEXT_RULESET_VERSION,
            message=(
                f"{target.where().capitalize()} "
                + ("says the worse side of" if what == "dominant_side" else "puts")
                + f" {kb[target.mention.concept].name} "
                + ("is the" if what == "dominant_side" else "on the")
                + f" {t_side.value} ('{target.sentence.text}'), but {other.where()} says "
                f"{o_side.value} ('{other.sentence.text}')."
            ),
            confidence=0.75,
            item=target,
            other=other,
        )

    def _dominant_side(self, items: list[Item]) -> Iterator[Flag]:
        """Relational sides: "left larger than right" against "right greater than left"."""
        for a, b in self._pairs(
            items,
            True,
            lambda i: i.mention.dominant,
            lambda x, y: x is not None and y is not None and x is not y,
        ):
            da, db = a.mention.dominant, b.mention.dominant
            if da is None or db is None or da is db:
                continue
            yield self._side_flag(a, b, da, db, "dominant_side")

    def _resolved_side(self, items: list[Item]) -> Iterator[Flag]:
        """Resolved findings keep their side: "the left pneumothorax has resolved" against
        "resolution of the right pneumothorax"."""
        resolved = [
            i
            for i in items
            if i.mention.interval == "resolved" and i.mention.laterality in (Side.LEFT, Side.RIGHT)
        ]
        buckets: dict[tuple[str, Side | None], list[Item]] = {}
        for b in resolved:
            if b.section is SectionName.IMPRESSION:
                buckets.setdefault(
                    (self._group(b.mention.concept), b.mention.laterality), []
                ).append(b)
        for a in resolved:
            if a.section is not SectionName.FINDINGS:
                continue
            sa = a.mention.laterality
            sb = Side.RIGHT if sa is Side.LEFT else Side.LEFT
            same = buckets.get((self._group(a.mention.concept), sa), [])
            for b in buckets.get((self._group(a.mention.concept), sb), [])[:MAX_PARTNERS]:
                if same:
                    break  # both sides resolved in the impression: two findings
                assert sa is not None
                yield self._side_flag(a, b, sa, sb, "resolved_side")

    def _interval_conflicts(self, items: list[Item]) -> Iterator[Flag]:
        kb = self._kb
        for a, b in self._pairs(
            items,
            False,
            lambda i: i.mention.interval,
            lambda x, y: frozenset({x, y}) in _CONFLICTING_INTERVALS,
        ):
            ia, ib = a.mention.interval, b.mention.interval
            if ia is None or ib is None or frozenset({ia, ib}) not in _CONFLICTING_INTERVALS:
                continue
            if not _sides_ok(a, b):
                continue
            target, other = self._pick(a, b, 0, 0)
            yield make_flag(
                subtype=ErrorSubtype.INTERVAL,
                rule_id="text.interval.findings_impression",
                rule_version=TEXT_RULESET_VERSION,
                message=(
                    f"{target.where().capitalize()} describes {kb[a.mention.concept].name} as "
                    f"{target.mention.interval} ('{target.sentence.text}'), but {other.where()} "
                    f"describes it as {other.mention.interval} ('{other.sentence.text}')."
                ),
                confidence=0.65,
                item=target,
                other=other,
            )

    def _interval_without_comparison(self, report: ParsedReport) -> Iterator[Flag]:
        comparison = report.section(SectionName.COMPARISON)
        if comparison is None or not _NO_COMPARISON.match(comparison.text):
            return
        for name in _COMPARED:
            section = report.section(name)
            if section is None:
                continue
            for sentence in section.sentences:
                match = _INTERVAL_WORDING.search(sentence.text)
                if match is None:
                    continue
                yield make_flag(
                    subtype=ErrorSubtype.INTERVAL,
                    rule_id="text.interval.no_comparison",
                    rule_version=TEXT_RULESET_VERSION,
                    message=(
                        f"{name.value.capitalize()} sentence {sentence.index + 1} describes change "
                        f"over time ('{match.group(0)}'), but the comparison section says there is "
                        f"no prior study ('{comparison.text}')."
                    ),
                    confidence=0.6,
                    section=name,
                    sentence=sentence,
                    concept=f"interval:{match.group(0).lower()}",
                    extra={"comparison": comparison.text, "wording": match.group(0)},
                )

    def _measurements(self, items: list[Item]) -> Iterable[Flag]:
        kb = self._kb
        out: list[Flag] = []
        for item in items:
            meas = item.mention.measurement
            if meas is None or not item.asserted:
                continue
            mm = meas.value_mm
            entry = kb[item.mention.concept]
            limit = _MAX_DEVICE_DISTANCE_MM if entry.is_device else _MAX_LESION_MM
            reason = None
            if mm is None:
                reason = f"the unit '{meas.unit}' is not used for chest radiograph measurements"
            elif meas.unit == "m" or mm > limit:
                reason = f"{meas.text} is larger than anything a chest radiograph can show here"
            elif mm <= 0:
                reason = f"{meas.text} is not a positive size"
            if reason is not None:
                out.append(
                    make_flag(
                        subtype=ErrorSubtype.MEASUREMENT,
                        rule_id="text.measurement.implausible",
                        rule_version=TEXT_RULESET_VERSION,
                        message=(
                            f"{item.where().capitalize()} gives an implausible size for "
                            f"{entry.name}: {reason} ('{item.sentence.text}')."
                        ),
                        confidence=0.8,
                        item=item,
                        extra={"measurement": meas.text},
                    )
                )
        sizes = Tally()
        for i in items:
            if i.mention.measurement is not None and i.mention.measurement.value_mm is not None:
                sizes.add((i.section, i.mention.concept), i.mention.measurement.value_mm, i)
        for a, b in self._pairs(items, False, _size_mm, _sizes_differ):
            ma, mb = a.mention.measurement, b.mention.measurement
            if ma is None or mb is None or ma.value_mm is None or mb.value_mm is None:
                continue
            if not _sides_ok(a, b) or sizes.count(
                (b.section, a.mention.concept), _is_number(ma.value_mm)
            ) - (1 if mb.value_mm == ma.value_mm else 0):
                continue
            big, small = max(ma.value_mm, mb.value_mm), min(ma.value_mm, mb.value_mm)
            if big - small <= 2.0 or big <= small * 1.25:
                continue
            target, other = self._pick(a, b, 0, 0)
            out.append(
                make_flag(
                    subtype=ErrorSubtype.MEASUREMENT,
                    rule_id="text.measurement.findings_impression",
                    rule_version=TEXT_RULESET_VERSION,
                    message=(
                        f"{target.where().capitalize()} measures {kb[a.mention.concept].name} as "
                        f"{target.mention.measurement.text if target.mention.measurement else ''}"
                        f" ('{target.sentence.text}'), but {other.where()} gives "
                        f"{other.mention.measurement.text if other.mention.measurement else ''} "
                        f"('{other.sentence.text}')."
                    ),
                    confidence=0.7,
                    item=target,
                    other=other,
                )
            )
        return out


def items_of(report: ParsedReport) -> list[Item]:
    """Mentions of the compared sections, in order (used by the model checks too)."""
    return [
        Item(name, sentence, mention)
        for name in _COMPARED
        if (section := report.section(name)) is not None
        for sentence, mention in section.mentions()
    ]
