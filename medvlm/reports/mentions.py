"""Finding mentions in a sentence: KB concept, assertion, side, zone, severity, size, interval."""

from __future__ import annotations

import re
from bisect import bisect_left

from medvlm.prompts.knowledge import Category, KnowledgeBase
from medvlm.reports.context import (
    MAX_BACKWARD_SCOPE,
    WEAK_HEDGE,
    CueCategory,
    Direction,
    find_cues,
    find_terminators,
)
from medvlm.reports.model import Measurement, Mention, Presence, Side
from medvlm.reports.vocabulary import QUALIFIERS

__all__ = ["MentionExtractor"]

_CLAUSE_BREAK = re.compile(
    r"[,;:()]|(?<![\w])(?:and|with|but|which|or|while|whereas)(?![\w])", re.I
)
_SIDE_RE = re.compile(
    r"(?<![\w-])(?P<s>left|right|bilateral(?:ly)?|both|bibasilar|bibasal|bibasalar|biapical|"
    r"bilat)(?:-sided| sided)?(?![\w])(?! (?:atri|ventric|heart|cardiac))",
    re.I,
)
_ZONE_RE = re.compile(
    r"(?<![\w])(?:(?P<upper>upper (?:lobes?|lungs?|zones?|lung zones?|thorax)|apex|apices|apical|"
    r"biapical|apicoposterior)|(?P<mid>middle lobe|lingula|lingular|mid ?lungs?|mid(?:-| )zones?|"
    r"perihilar)|(?P<lower>lower (?:lobes?|lungs?|zones?|lung zones?)|bases?|basilar|basal|"
    r"bibasilar|bibasal|costophrenic|retrocardiac|infrahilar|subpulmonic))(?![\w])",
    re.I,
)
_SEVERITY_WORDS: dict[str, tuple[str, frozenset[int]]] = {}
for _words, _label, _grades in (
    (("trace", "minimal", "minimally", "tiny", "trivial"), "trace", frozenset({0, 1})),
    (("borderline",), "borderline", frozenset({0, 1})),
    (("small", "mild", "mildly", "slight", "slightly", "subtle"), "mild", frozenset({1})),
    (("moderate", "moderately", "moderate-sized", "medium"), "moderate", frozenset({2})),
    (
        ("large", "severe", "severely", "marked", "markedly", "extensive", "massive", "huge"),
        "severe",
        frozenset({3}),
    ),
):
    for _w in _words:
        _SEVERITY_WORDS[_w] = (_label, _grades)
_SEVERITY_RE = re.compile(
    r"(?<![\w-])(" + "|".join(sorted(_SEVERITY_WORDS, key=len, reverse=True)) + r")(?![\w-])", re.I
)
_INTERVAL_RE = re.compile(
    r"(?<![\w])(?:(?P<new>new|newly|interval development|interval appearance|developing)|"
    r"(?P<worse>increas(?:ed|ing)|worse(?:ned|ning)?|progress(?:ed|ion|ive|ing)|enlarging|"
    r"interval increase|more (?:prominent|conspicuous|extensive|pronounced))|"
    r"(?P<better>decreas(?:ed|ing)|improv(?:ed|ing|ement)|resolving|smaller|diminish(?:ed|ing)|"
    r"regress(?:ed|ion|ing)|interval decrease|less (?:prominent|conspicuous|extensive|pronounced))|"
    r"(?P<unchanged>unchanged|stable|similar|not changed|grossly unchanged|no change)|"
    r"(?P<persistent>persistent|persists|persisting|again (?:seen|noted|demonstrated)|"
    r"re-?demonstrated|continued|remains?|residual))(?![\w])",
    re.I,
)
_QUALIFIER_RE = re.compile(
    r"(?<![\w])("
    + "|".join(re.escape(q) for q in sorted(QUALIFIERS, key=lambda q: (-len(q), q)))
    + r")(?![\w])",
    re.I,
)
_MEASURE_RE = re.compile(
    r"(?<![\w.])(?P<v>\d+(?:\.\d+)?)\s*(?:(?:x|by)\s*\d+(?:\.\d+)?\s*)*"
    r"(?P<u>mm|cm|m|millimet(?:er|re)s?|centimet(?:er|re)s?|met(?:er|re)s?|inch(?:es)?|in)(?![\w])",
    re.I,
)
_DOMINANT_RE = re.compile(
    r"(?<![\w])(?:(?P<a>left|right)(?:-sided)? (?:(?:is |are )?(?:slightly |much |somewhat )?"
    r"(?:larger|greater|more|worse|bigger|denser|more pronounced|more prominent)) than "
    r"(?:the )?(?:left|right)|(?:larger|greater|worse|more pronounced|more prominent|"
    r"predominantly|predominant) (?:on the |at the )?(?P<b>left|right)|"
    r"(?P<c>left|right) (?:greater|more|larger|worse) (?:than|>) (?:left|right))(?![\w])",
    re.I,
)
_OTHERWISE_RE = re.compile(r"(?<![\w])(?:otherwise|remainder|rest of|elsewhere|remaining)(?![\w])")
_COORDINATION = frozenset({"and", "or"})
_UNIT_NORMAL = {"millimeter": "mm", "millimetre": "mm", "centimeter": "cm", "centimetre": "cm"}


def _unit(raw: str) -> str:
    u = raw.lower().rstrip("s")
    if u in ("mm", "cm", "m", "in", "inche", "inch"):
        return "in" if u.startswith("in") else u
    if u in ("meter", "metre"):
        return "m"
    return _UNIT_NORMAL.get(u, u)


def _clause(
    sentence: str, breaks: list[int], terms: list[tuple[int, int]], start: int, end: int
) -> tuple[int, int]:
    """The clause around a mention: between clause breaks, extended across "and"/"or" when the
    segment on the other side holds no other finding ("right upper and left lower lobe opacity")."""

    def word_at(pos: int) -> str:
        return sentence[pos : pos + 3].strip().lower()

    def has_term(a: int, b: int) -> bool:
        return any(a <= s and e <= b and not (s == start and e == end) for s, e in terms)

    i = bisect_left(breaks, start)
    while i > 0:
        b = breaks[i - 1]
        prev = breaks[i - 2] if i > 1 else 0
        if word_at(b) in _COORDINATION and not has_term(prev, b):
            i -= 1
            continue
        break
    c_start = breaks[i - 1] if i > 0 else 0
    j = bisect_left(breaks, end)
    while j < len(breaks):
        b = breaks[j]
        nxt = breaks[j + 1] if j + 1 < len(breaks) else len(sentence)
        if word_at(b) in _COORDINATION and not has_term(b, nxt):
            j += 1
            continue
        break
    c_end = breaks[j] if j < len(breaks) else len(sentence)
    return c_start, c_end


class MentionExtractor:
    """Stateless after construction (compiled patterns only), so one instance serves all threads."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self._kb = kb

    @property
    def kb(self) -> KnowledgeBase:
        return self._kb

    def extract(self, sentence: str, offset: int = 0) -> tuple[Mention, ...]:
        """Mentions in ``sentence``; spans are shifted by ``offset`` (the sentence's section start)."""
        kb = self._kb
        raw: list[tuple[int, int, str, bool]] = []
        normal_spans: list[tuple[int, int]] = []
        for m in kb.normal_pattern.finditer(sentence):
            raw.append((m.start(), m.end(), kb.normal_concept_of(m), True))
            normal_spans.append((m.start(), m.end()))
        for m in kb.term_pattern.finditer(sentence):
            if any(s < m.end() and m.start() < e for s, e in normal_spans):
                continue
            raw.append((m.start(), m.end(), kb.concept_of(m), False))
        if not raw:
            return ()
        raw.sort()
        cues = find_cues(sentence)
        terminators = find_terminators(sentence)
        breaks = [m.start() for m in _CLAUSE_BREAK.finditer(sentence)]
        lowered = sentence.lower()
        sentence_quals = {"otherwise"} if _OTHERWISE_RE.search(lowered) else set()
        sentence_sides = {m.group("s").lower() for m in _SIDE_RE.finditer(sentence)}
        term_spans = [(s, e) for s, e, _, _ in raw]
        out: list[Mention] = []
        for start, end, concept, normal in raw:
            categories: set[CueCategory] = set()
            cue_texts: list[str] = []
            first_negation = first_possible = None
            for cue in cues:
                if cue.category is CueCategory.PSEUDO or (cue.start < end and start < cue.end):
                    continue
                if "remov" in cue.text and not kb.findings[concept].is_device:
                    continue  # "removal of the chest tube with ... atelectasis": devices only
                applies = False
                if cue.end <= start and cue.direction is not Direction.BACKWARD:
                    t = bisect_left(terminators, cue.end)
                    applies = t >= len(terminators) or terminators[t] >= start
                elif cue.start >= end and cue.direction is not Direction.FORWARD:
                    t = bisect_left(terminators, end)
                    applies = cue.start - end <= MAX_BACKWARD_SCOPE and (
                        t >= len(terminators) or terminators[t] >= cue.start
                    )
                    if cue.category is CueCategory.POSSIBLE and "," in sentence[end : cue.start]:
                        applies = False  # "consolidation, probably aspiration": the hedge is on
                        # the interpretation after the comma, not the observation before it
                if applies:
                    categories.add(cue.category)
                    cue_texts.append(cue.text)
                    if cue.category is CueCategory.NEGATED and first_negation is None:
                        first_negation = cue.start
                    if cue.category is CueCategory.POSSIBLE and first_possible is None:
                        first_possible = cue.start
            hedge: str | None = None
            if normal:
                presence = Presence.ABSENT
            elif (
                CueCategory.POSSIBLE in categories
                and CueCategory.HYPOTHETICAL not in categories
                and first_negation is not None
                and first_possible is not None
                and first_negation < first_possible < start
            ):
                # "No focal opacity to suggest infection": the hedge sits inside the denial
                presence = Presence.ABSENT
            elif CueCategory.POSSIBLE in categories or CueCategory.HYPOTHETICAL in categories:
                presence = Presence.UNCERTAIN
                if CueCategory.HYPOTHETICAL in categories:
                    hedge = "hypothetical"
                elif any(WEAK_HEDGE.search(c) for c in cue_texts):
                    hedge = "weak"
                else:
                    hedge = "possible"
            elif CueCategory.NEGATED in categories:
                presence = Presence.ABSENT
            else:
                presence = Presence.PRESENT
            c_start, c_end = _clause(sentence, breaks, term_spans, start, end)
            before = sentence[c_start:end]
            clause = sentence[c_start:c_end]
            out.append(
                self._mention(
                    concept,
                    sentence,
                    start,
                    end,
                    offset,
                    presence,
                    before,
                    clause,
                    categories,
                    tuple(cue_texts),
                    normal,
                    sentence_quals,
                    sentence_sides,
                    hedge,
                )
            )
        return tuple(out)

    def _mention(
        self,
        concept: str,
        sentence: str,
        start: int,
        end: int,
        offset: int,
        presence: Presence,
        before: str,
        clause: str,
        categories: set[CueCategory],
        cues: tuple[str, ...],
        normal: bool,
        sentence_quals: set[str],
        sentence_sides: set[str],
        hedge: str | None = None,
    ) -> Mention:
        entry = self._kb.findings[concept]
        sides = {m.group("s").lower() for m in _SIDE_RE.finditer(clause)}
        if not sides and len(sentence_sides) == 1:
            sides = set(sentence_sides)
        side: Side | None = None
        if sides:
            has_left = "left" in sides
            has_right = "right" in sides
            if (has_left and has_right) or sides - {"left", "right"}:
                side = Side.BILATERAL
            else:
                side = Side.LEFT if has_left else Side.RIGHT
        zones = set()
        for zm in _ZONE_RE.finditer(clause):
            zones.add(zm.lastgroup or "")
            if zm.group(0).lower().startswith("bibas"):
                side = Side.BILATERAL
        zones.discard("")
        sev_words = [w.lower() for w in _SEVERITY_RE.findall(before)]
        grades: frozenset[int] = frozenset()
        severity: str | None = None
        if sev_words:
            labels = [_SEVERITY_WORDS[w] for w in sev_words]
            all_grades = [g for _, gs in labels for g in gs]
            if len(labels) >= 2 and re.search(r"\b(?:to|-)\b|-", before):
                grades = frozenset(range(min(all_grades), max(all_grades) + 1))
                severity = f"{labels[0][0]} to {labels[-1][0]}"
            else:
                grades = labels[-1][1]
                severity = labels[-1][0]
        interval = None
        im = None
        seen_intervals = set()
        for im in _INTERVAL_RE.finditer(clause):
            interval = im.lastgroup
            seen_intervals.add(interval)
        if len(seen_intervals - {"persistent"}) > 1:
            interval = None  # "developing or resolving pneumonia": no single interval stated
        if any("resol" in c or "cleared" in c for c in cues):
            interval = "resolved"
        dominant = None
        if side is Side.BILATERAL:
            dm = _DOMINANT_RE.search(sentence, start, min(len(sentence), end + 60))
            if dm:
                word = (dm.group("a") or dm.group("b") or dm.group("c") or "").lower()
                dominant = Side.LEFT if word == "left" else Side.RIGHT
        measurement = None
        mm = _MEASURE_RE.search(clause)
        if mm:
            measurement = Measurement(float(mm.group("v")), _unit(mm.group("u")), mm.group(0))
        pre_term = before[: len(before) - (end - start)]
        qualifiers = {q.lower() for q in _QUALIFIER_RE.findall(pre_term)} | sentence_quals
        del im
        return Mention(
            concept=concept,
            text=sentence[start:end],
            start=offset + start,
            end=offset + end,
            presence=presence,
            laterality=side if entry.sided or entry.category is Category.DEVICE else None,
            zones=frozenset(zones),
            severity=severity,
            grades=grades,
            measurement=measurement,
            interval=interval,
            device=entry.is_device,
            historical=CueCategory.HISTORICAL in categories,
            normal_phrase=normal,
            qualifiers=frozenset(qualifiers),
            cues=cues,
            hedge=hedge,
            dominant=dominant if entry.sided else None,
        )
