"""Seeded synthetic error injection into report FINDINGS.

Each report gets its own random generator, derived from ``(seed, report id)`` through SHA-256, so
the dataset does not depend on corpus order and the same seed gives a byte-identical JSONL file.
Per report: with probability ``p_original`` it stays original; otherwise one (by default) error is
injected, drawn uniformly among the subtypes that apply to that text (laterality needs a side
word, remove needs a positive finding sentence, ...). Multiple errors per report share one COMPLEX
class so the label stays well defined. Injected text exists only at run time: never commit it.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.errors import EvalError
from eval.records import JSONDict, ReportRecord
from eval.rules import (
    INSERT_CANDIDATES,
    NEGATED_SENTENCE,
    SEX_WORD_RE,
    SUBSTITUTION_RULES,
    fix_article,
    is_positive_finding,
)
from medvlm.taxonomy import COMPLEX_CLASS_OF, ComplexClass, ErrorSubtype

Span = tuple[int, int]
SentenceSplitter = Callable[[str], Sequence[Span]]
"""Returns the ``(start, end)`` character spans of the sentences of a section text."""

TEXT_SUBTYPES: tuple[ErrorSubtype, ...] = (
    ErrorSubtype.LATERALITY,
    ErrorSubtype.NEGATION,
    ErrorSubtype.SEVERITY,
    ErrorSubtype.LOCATION,
    ErrorSubtype.MEASUREMENT,
    ErrorSubtype.INTERVAL,
    ErrorSubtype.INSERT_FINDING,
    ErrorSubtype.REMOVE_FINDING,
)
ALL_SUBTYPES: tuple[ErrorSubtype, ...] = (*TEXT_SUBTYPES, ErrorSubtype.HEADER_MISMATCH)
_SEX_KEYS = ("patient_sex", "sex", "PatientSex")
_AFFIRMED_ONLY = frozenset(
    {
        ErrorSubtype.LATERALITY,
        ErrorSubtype.SEVERITY,
        ErrorSubtype.LOCATION,
        ErrorSubtype.MEASUREMENT,
        ErrorSubtype.INTERVAL,
    }
)


@dataclass(frozen=True, slots=True)
class InjectionConfig:
    """What to inject. Validated at construction."""

    seed: int = 0
    p_original: float = 0.5
    errors_per_report: int = 1
    subtypes: tuple[ErrorSubtype, ...] = ALL_SUBTYPES

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_original <= 1.0:
            raise EvalError(f"p_original must be in [0, 1], got {self.p_original}")
        if self.errors_per_report < 1:
            raise EvalError(f"errors_per_report must be >= 1, got {self.errors_per_report}")
        if not self.subtypes:
            raise EvalError("subtypes is empty; give at least one error subtype to inject")


@dataclass(frozen=True, slots=True)
class Edit:
    """One applied edit. ``span`` is in the text after all edits (``None`` for a removal)."""

    subtype: ErrorSubtype
    before: str
    after: str
    span: Span | None
    removed_span: Span | None = None


@dataclass(frozen=True, slots=True)
class _Site:
    subtype: ErrorSubtype
    start: int
    end: int
    options: tuple[str, ...]


@dataclass(slots=True)
class _State:
    text: str
    sentences: list[Span]
    edits: list[Edit] = field(default_factory=list)
    header: dict[str, Any] | None = None


def report_rng(seed: int, report_id: str, purpose: str = "inject") -> random.Random:
    """A generator that depends only on ``(seed, report_id, purpose)``."""
    digest = hashlib.sha256(f"radcheck-eval:{purpose}:{seed}:{report_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def selection_key(seed: int, report_id: str) -> str:
    """Order key used to pick ``n`` reports from a corpus independently of corpus order."""
    return hashlib.sha256(f"radcheck-eval:select:{seed}:{report_id}".encode()).hexdigest()


def _sentence_of(sentences: Sequence[Span], offset: int) -> int | None:
    for index, (start, end) in enumerate(sentences):
        if start <= offset < end:
            return index
    return None


def _free(state: _State, start: int, end: int) -> bool:
    """No earlier edit touches the sentence(s) covering ``[start, end)``."""
    for edit in state.edits:
        if edit.span is None:
            continue
        a, b = edit.span
        for s_start, s_end in state.sentences:
            if s_start <= a < s_end and s_start <= start < s_end:
                return False
        if a < end and start < b:
            return False
    return True


def _substitution_sites(state: _State, subtype: ErrorSubtype) -> list[_Site]:
    sites: list[_Site] = []
    for rule in SUBSTITUTION_RULES:
        if rule.subtype is not subtype:
            continue
        for match in rule.pattern.finditer(state.text):
            index = _sentence_of(state.sentences, match.start())
            if index is None:
                continue
            if rule.sentence_start and match.start() != state.sentences[index][0]:
                continue
            if not _free(state, match.start(), match.end()):
                continue
            if subtype in _AFFIRMED_ONLY and NEGATED_SENTENCE.search(
                state.text[state.sentences[index][0] : state.sentences[index][1]]
            ):
                continue  # "no right effusion" -> "no left effusion" is not a clinical error
            options = tuple(o for o in rule.alternatives(match) if o != match.group(0))
            if options:
                sites.append(_Site(subtype, match.start(), match.end(), options))
    return sites


def _insert_at(text: str, gap: int, last: bool, sentence: str) -> tuple[str, Span]:
    """``text`` with ``sentence`` inserted at ``gap``, and the sentence's span in it.

    ``gap`` is a sentence start, or the end of the last sentence when ``last`` (there may be
    punctuation-only debris after it, as in IU's "abnormality. .").
    """
    if last:
        return f"{text[:gap]} {sentence}{text[gap:]}", (gap + 1, gap + 1 + len(sentence))
    return f"{text[:gap]}{sentence} {text[gap:]}", (gap, gap + len(sentence))


def _insert_sites(state: _State, split: SentenceSplitter, normalize: Normalizer) -> list[_Site]:
    lower = state.text.lower()
    options = tuple(
        c.sentence for c in INSERT_CANDIDATES if not any(key in lower for key in c.keys)
    )
    if not options or not state.sentences:
        return []
    end = state.sentences[-1][1]
    gaps = [start for start, _ in state.sentences] + [end]
    probe = options[0]
    sites = []
    for gap in gaps:
        if not (_free(state, gap, gap) or gap == end):
            continue
        # Only where the new sentence stands alone in the checker's split: not after a last
        # sentence without a full stop, nor after a trailing abbreviation ("... etc.").
        new_text, span = _insert_at(state.text, gap, gap == end, probe)
        text, where = _normal_form(new_text, normalize)
        if _move(span, where) in split(text):
            sites.append(_Site(ErrorSubtype.INSERT_FINDING, gap, gap, options))
    return sites


def _remove_sites(state: _State) -> list[_Site]:
    if len(state.sentences) < 2:
        return []
    return [
        _Site(ErrorSubtype.REMOVE_FINDING, start, end, ("",))
        for start, end in state.sentences
        if is_positive_finding(state.text[start:end]) and _free(state, start, end)
    ]


def _sex_key(header: Mapping[str, Any] | None) -> str | None:
    if not header:
        return None
    for key in _SEX_KEYS:
        if str(header.get(key, "")).upper() in ("M", "F"):
            return key
    return None


def _sites(
    state: _State,
    subtype: ErrorSubtype,
    context: str,
    split: SentenceSplitter,
    normalize: Normalizer,
) -> list[_Site]:
    if subtype is ErrorSubtype.INSERT_FINDING:
        return _insert_sites(state, split, normalize)
    if subtype is ErrorSubtype.REMOVE_FINDING:
        return _remove_sites(state)
    if subtype is ErrorSubtype.HEADER_MISMATCH:
        if state.edits or _sex_key(state.header) is None or not SEX_WORD_RE.search(context):
            return []
        return [_Site(subtype, 0, 0, ("",))]
    return _substitution_sites(state, subtype)


def _shift(edits: list[Edit], at: int, delta: int) -> list[Edit]:
    shifted = []
    for edit in edits:
        span = edit.span
        if span is not None and span[0] >= at:
            span = (span[0] + delta, span[1] + delta)
        shifted.append(Edit(edit.subtype, edit.before, edit.after, span, edit.removed_span))
    return shifted


Normalizer = Callable[[str], str]
"""Puts a section text in the splitter's normal form (for example medvlm's, via eval.checker)."""

_WS_RUN = re.compile(r"\s+")


def collapse_whitespace(text: str) -> str:
    """Runs of whitespace to one space, no leading or trailing whitespace."""
    return _WS_RUN.sub(" ", text).strip()


def _collapse(text: str) -> tuple[str, list[int]]:
    """``collapse_whitespace(text)`` and where each offset ``0..len(text)`` of ``text`` lands."""
    out: list[str] = []
    where = [0] * (len(text) + 1)
    for match in re.finditer(r"\s+|\S+", text):
        a, b = match.span()
        if match.group(0)[0].isspace():
            where[a:b] = [len(out)] * (b - a)
            if out and b < len(text):
                out.append(" ")
        else:
            where[a:b] = range(len(out), len(out) + b - a)
            out.extend(match.group(0))
    where[len(text)] = len(out)
    return "".join(out), where


def _normal_form(text: str, normalize: Normalizer) -> tuple[str, list[int]]:
    """``normalize(text)`` and where each offset of ``text`` lands in it.

    Edits join text with single spaces, so they can only leave whitespace out of form (a double
    space, a trailing space); that is all this repairs. Anything else is a bug in an edit.
    """
    wanted = normalize(text)
    if wanted == text:
        return text, list(range(len(text) + 1))
    collapsed, where = _collapse(text)
    if collapsed != wanted:
        raise EvalError(
            "an injected edit left findings text that differs from the parser's normal form by "
            "more than whitespace; this is a bug in eval.injection, please report it with the "
            "report id and seed"
        )
    return wanted, where


def _move(span: Span | None, where: Sequence[int]) -> Span | None:
    if span is None:
        return None
    start, end = span
    return (where[start], where[end - 1] + 1 if end > start else where[start])


def _renormalize(state: _State, normalize: Normalizer) -> None:
    """Put ``state.text`` back in ``normalize``'s form after an edit, moving edit spans with it."""
    text, where = _normal_form(state.text, normalize)
    if text == state.text:
        return
    state.text = text
    state.edits = [
        Edit(e.subtype, e.before, e.after, _move(e.span, where), e.removed_span)
        for e in state.edits
    ]


def _apply(
    state: _State,
    site: _Site,
    rng: random.Random,
    split: SentenceSplitter,
    normalize: Normalizer,
) -> None:
    text = state.text
    if site.subtype is ErrorSubtype.HEADER_MISMATCH:
        assert state.header is not None
        key = _sex_key(state.header)
        assert key is not None
        before = str(state.header[key])
        after = "F" if before.upper() == "M" else "M"
        state.header = {**state.header, key: after}
        match = SEX_WORD_RE.search(text)
        span = (match.start(), match.end()) if match else None
        state.edits.append(Edit(site.subtype, before, after, span))
        return
    if site.subtype is ErrorSubtype.INSERT_FINDING:
        sentence = rng.choice(site.options)
        at = site.start
        new_text, span = _insert_at(text, at, at == state.sentences[-1][1], sentence)
        state.edits = _shift(state.edits, at, len(new_text) - len(text))
        state.edits.append(Edit(site.subtype, "", sentence, span))
    elif site.subtype is ErrorSubtype.REMOVE_FINDING:
        start, end = site.start, site.end
        cut_end = end
        while cut_end < len(text) and text[cut_end].isspace():
            cut_end += 1
        cut_start = start
        if cut_end == len(text):  # last sentence: drop the whitespace before it instead
            while cut_start > 0 and text[cut_start - 1].isspace():
                cut_start -= 1
        new_text = text[:cut_start] + text[cut_end:]
        state.edits = _shift(state.edits, cut_end, cut_start - cut_end)
        state.edits.append(Edit(site.subtype, text[start:end], "", None, (start, end)))
    else:
        width, replacement = fix_article(text[: site.start], rng.choice(site.options))
        start = site.start - width
        new_text = text[:start] + replacement + text[site.end :]
        state.edits = _shift(state.edits, site.end, len(replacement) - (site.end - start))
        span = (start, start + len(replacement))
        state.edits.append(Edit(site.subtype, text[start : site.end], replacement, span))
    state.text = new_text
    _renormalize(state, normalize)
    state.sentences = list(split(state.text))


def _choose(
    state: _State,
    allowed: Iterable[ErrorSubtype],
    rng: random.Random,
    context: str,
    klass: ComplexClass | None,
    split: SentenceSplitter,
    normalize: Normalizer,
) -> _Site | None:
    candidates: list[tuple[ErrorSubtype, list[_Site]]] = []
    for subtype in allowed:
        if klass is not None and COMPLEX_CLASS_OF[subtype] is not klass:
            continue
        sites = _sites(state, subtype, context, split, normalize)
        if sites:
            candidates.append((subtype, sites))
    if not candidates:
        return None
    _, sites = rng.choice(candidates)
    return rng.choice(sites)


def inject_record(
    record: ReportRecord,
    findings: str,
    impression: str | None,
    config: InjectionConfig,
    split: SentenceSplitter,
    normalize: Normalizer = collapse_whitespace,
) -> JSONDict:
    """Build one dataset row for ``record`` (its findings text given explicitly).

    ``findings`` must be in ``normalize``'s normal form; after every edit the text is put back
    in that form (spans follow), so the row's ``findings`` is what the checker's parser holds and
    ``sentence_index`` counts sentences the way the checker's flags do.
    """
    rng = report_rng(config.seed, record.id)
    header = dict(record.header) if record.header is not None else None
    state = _State(text=findings, sentences=list(split(findings)), header=header)
    context = " ".join(t for t in (findings, impression, record.indication) if t)
    klass: ComplexClass | None = None
    if rng.random() >= config.p_original:
        for _ in range(config.errors_per_report):
            site = _choose(state, config.subtypes, rng, context, klass, split, normalize)
            if site is None:
                break
            klass = COMPLEX_CLASS_OF[site.subtype]
            _apply(state, site, rng, split, normalize)
    edits = state.edits
    first = edits[0] if edits else None
    sentence_index = None
    if first is not None and first.span is not None:
        sentence_index = _sentence_of(state.sentences, first.span[0])
    return {
        "id": record.id,
        "seed": config.seed,
        "label_simple": "Y" if edits else "N",
        "label_complex": (klass or ComplexClass.ORIGINAL).value,
        "subtype": first.subtype.value if first else None,
        "sentence_index": sentence_index,
        "span": list(first.span) if first and first.span else None,
        "findings": state.text,
        "impression": impression,
        "indication": record.indication,
        "comparison": record.comparison,
        "text": None,
        "header": state.header,
        "original_findings": findings,
        "original_header": dict(record.header) if record.header is not None else None,
        "edits": [
            {
                "subtype": e.subtype.value,
                "before": e.before,
                "after": e.after,
                "span": list(e.span) if e.span else None,
                "sentence_index": _sentence_of(state.sentences, e.span[0]) if e.span else None,
                "removed_span": list(e.removed_span) if e.removed_span else None,
            }
            for e in edits
        ],
    }


SectionsOf = Callable[[str], tuple[str | None, str | None]]
"""Returns ``(findings, impression)`` of a raw report text."""


def inject_corpus(
    records: Iterable[ReportRecord],
    config: InjectionConfig,
    *,
    split: SentenceSplitter,
    sections_of: SectionsOf,
    normalize: Normalizer = collapse_whitespace,
    n: int | None = None,
) -> Iterator[JSONDict]:
    """Inject errors into ``n`` reports that have FINDINGS (all when ``n`` is None).

    The ``n`` reports are the ones with the smallest seeded hash of their id, so the choice does
    not depend on corpus order; rows come out sorted by that key. ``normalize`` puts FINDINGS in
    the splitter's normal form first, so spans refer to the text the checker will see.
    """
    eligible: dict[str, tuple[ReportRecord, str, str | None]] = {}
    seen: set[str] = set()
    for record in records:
        findings, impression = record.findings, record.impression
        if record.text is not None and findings is None and impression is None:
            findings, impression = sections_of(record.text)
        if record.id in seen:
            raise EvalError(f"duplicate report id {record.id!r} in the corpus; ids must be unique")
        seen.add(record.id)
        findings = normalize(findings) if findings else None
        if findings:
            eligible[record.id] = (record, findings, impression)
    chosen = sorted(eligible, key=lambda rid: (selection_key(config.seed, rid), rid))
    if n is not None:
        if n > len(chosen):
            raise EvalError(
                f"asked for {n} reports but only {len(chosen)} have a FINDINGS section; lower --n"
            )
        chosen = chosen[:n]
    for rid in chosen:
        record, findings, impression = eligible[rid]
        yield inject_record(record, findings, impression, config, split, normalize)
