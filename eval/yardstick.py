"""The honest yardstick: the text checker on injected findings-vs-impression contradictions.

    python -m eval yardstick --split dev            # develop and tune here
    python -m eval yardstick --split test           # the frozen split: report, never tune

For every report of the split that has FINDINGS and IMPRESSION: the clean report, rendered in each
layout of :mod:`eval.layouts`, must not be flagged (verdict "Y"); one contradiction chosen by
:mod:`eval.contradictions` (sites chosen without the checker's parser) is rendered in every layout
and must be caught (verdict "Y") and pointed at (a flag at warning or above on the modified
sentence or on its counterpart). Rates come with Wilson 95% intervals, per pattern, per layout,
per operator and per source of truth (term lists; MeSH-confirmed). The hand-written ICU-style
reports in ``tests/fixtures/icu_reports`` are checked as a third, raw-text corpus. Injected text
lives in memory only (IU reports are CC BY-NC-ND).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.contradictions import (
    HEADLINE_PATTERNS,
    Case,
    cases_for,
    choose_case,
    split_sentences,
    yardstick_split,
)
from eval.layouts import IU_LAYOUTS, LAYOUTS, MIMIC_LAYOUTS, render
from eval.records import ReportRecord
from medvlm.checking import Checker, CheckResult
from medvlm.reports import ParsedReport, SectionName, read_report
from medvlm.taxonomy import Severity

__all__ = ["ICU_FIXTURES", "YardstickCounts", "run_yardstick", "wilson"]

ICU_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "icu_reports"
_WORD = re.compile(r"[a-z0-9]+")
_RAW_HEADER = re.compile(r"(?im)^\s*(FINDINGS|IMPRESSION|INDICATION|COMPARISON)\s*:")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"n": n, "k": k, "rate": round(k / n, 4) if n else None, "ci95": wilson(k, n)}


@dataclass
class YardstickCounts:
    """Counters for one group of cases."""

    n: int = 0
    caught: int = 0
    pointed: int = 0

    def add(self, caught: bool, pointed: bool) -> None:
        self.n += 1
        self.caught += caught
        self.pointed += caught and pointed

    def to_dict(self) -> dict[str, Any]:
        return {
            "caught": _rate(self.caught, self.n),
            "caught_and_pointed": _rate(self.pointed, self.n),
            "pointed_given_caught": _rate(self.pointed, self.caught),
        }


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower().replace("___", "xxxx")))


def _same_sentence(a: str, b: str) -> bool:
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return False
    return len(wa & wb) / min(len(wa), len(wb)) >= 0.7


def _flag_sentences(parsed: ParsedReport, result: CheckResult) -> list[str]:
    out = []
    for f in result.flags:
        if f.severity is Severity.INFO or f.section is None or f.sentence_index is None:
            continue
        section = parsed.section(f.section)
        if section is not None and f.sentence_index < len(section.sentences):
            out.append(section.sentences[f.sentence_index].text)
    return out


def _points(parsed: ParsedReport, result: CheckResult, case: Case) -> bool:
    targets = [t for t in (case.modified, case.counterpart) if t]
    return any(
        _same_sentence(s, t) or _same_sentence(t, s)
        for s in _flag_sentences(parsed, result)
        for t in targets
    )


def impression_not_in_findings(checker: Checker, parsed: ParsedReport) -> list[str]:
    """The text-side signal for a removed finding (issue 12.5), measured here and not shipped as
    a flag: impression sentences that assert a finding (not a device, not a generic statement)
    of which FINDINGS says nothing at all, under any name of its side group."""
    findings = parsed.section(SectionName.FINDINGS)
    impression = parsed.section(SectionName.IMPRESSION)
    if findings is None or impression is None:
        return []
    kb = checker.kb

    def group(concept: str) -> str:
        return kb[concept].side_group or concept

    seen = {group(m.concept) for _, m in findings.mentions()}
    out = []
    for sentence, m in impression.mentions():
        entry = kb[m.concept]
        if m.presence.value != "present" or m.historical or entry.is_device:
            continue
        if entry.category.value == "generic" or group(m.concept) in seen:
            continue
        if sentence.text not in out:
            out.append(sentence.text)
    return out


def _sections_of_raw(text: str) -> dict[str, str]:
    """FINDINGS / IMPRESSION of a raw fixture (a plain header split, not medvlm's)."""
    marks = list(_RAW_HEADER.finditer(text))
    out: dict[str, str] = {}
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        body = text[m.end() : end]
        body = re.split(r"(?m)^\s*(?:NOTIFICATION|ADDENDUM|RECOMMENDATION)\S*\s*:", body)[0]
        out[m.group(1).lower()] = " ".join(body.split())
    return out


def load_icu_fixtures(folder: Path = ICU_FIXTURES) -> list[ReportRecord]:
    if not folder.is_dir():
        return []
    return [
        ReportRecord(id=p.stem, text=p.read_text(encoding="utf-8"))
        for p in sorted(folder.glob("*.txt"))
    ]


def run_yardstick(
    records: Iterable[ReportRecord],
    *,
    split: str = "dev",
    seed: int = 0,
    layouts: Sequence[str] = tuple(LAYOUTS),
    limit: int | None = None,
    icu: Sequence[ReportRecord] = (),
    checker: Checker | None = None,
    examples: int = 0,
) -> dict[str, Any]:
    """Measure the checker on one split (``dev``, ``test`` or ``all``); returns JSON-ready dict."""
    checker = checker or Checker()
    t0 = time.perf_counter()
    clean: dict[str, Counter[str]] = {name: Counter() for name in layouts}
    overall = YardstickCounts()
    groups: dict[str, dict[str, YardstickCounts]] = {
        k: {} for k in ("pattern", "layout", "operator", "source", "section")
    }
    removed = YardstickCounts()
    removed_signal = YardstickCounts()
    signal_on_clean: Counter[str] = Counter()
    misses: list[dict[str, Any]] = []
    false_flags: list[dict[str, Any]] = []
    used = 0
    checks = 0
    for record in records:
        if not (record.findings and record.impression):
            continue
        if split != "all" and yardstick_split(record.id) != split:
            continue
        if limit is not None and used >= limit:
            break
        used += 1
        for layout in layouts:
            rendered = render(
                layout, record.findings, record.impression, record.indication, record.comparison
            )
            parsed = read_report(rendered, checker.parser)
            result = checker.check(parsed)
            checks += 1
            clean[layout]["n"] += 1
            if layout == layouts[0]:
                signal_on_clean["n"] += 1
                signal_on_clean["flagged"] += bool(impression_not_in_findings(checker, parsed))
            if result.verdict_simple == "Y":
                clean[layout]["flagged"] += 1
                if len(false_flags) < examples:
                    false_flags.append(
                        {
                            "id": record.id,
                            "layout": layout,
                            "flags": [f.message for f in result.flags],
                        }
                    )
        rng = random.Random(f"{seed}:{record.id}")
        cases = cases_for(record.id, record.findings, record.impression, record.tags, rng)
        headline = [c for c in cases if c.pattern in HEADLINE_PATTERNS]
        case = choose_case(headline, rng)
        removal = choose_case([c for c in cases if c.pattern == "removed"], rng)
        for layout in layouts:
            if case is not None:
                rendered = render(
                    layout, case.findings, case.impression, record.indication, record.comparison
                )
                parsed = read_report(rendered, checker.parser)
                result = checker.check(parsed)
                checks += 1
                caught = result.verdict_simple == "Y"
                pointed = _points(parsed, result, case)
                overall.add(caught, pointed)
                for kind, key in (
                    ("pattern", case.pattern),
                    ("layout", layout),
                    ("operator", f"{case.pattern}:{case.operator}"),
                    ("source", "mesh_confirmed" if case.mesh_confirmed else "terms_only"),
                    ("section", case.section),
                ):
                    groups[kind].setdefault(key, YardstickCounts()).add(caught, pointed)
                if (not caught or not pointed) and len(misses) < examples and layout == layouts[0]:
                    misses.append(
                        {
                            "id": record.id,
                            "pattern": case.pattern,
                            "operator": case.operator,
                            "modified": case.modified,
                            "counterpart": case.counterpart,
                            "caught": caught,
                            "flags": [f.message for f in result.flags],
                        }
                    )
            if removal is not None:
                rendered = render(
                    layout, removal.findings, removal.impression, record.indication, None
                )
                parsed = read_report(rendered, checker.parser)
                result = checker.check(parsed)
                checks += 1
                removed.add(result.verdict_simple == "Y", _points(parsed, result, removal))
                hits = impression_not_in_findings(checker, parsed)
                removed_signal.add(
                    bool(hits), any(_same_sentence(h, removal.counterpart) for h in hits)
                )
    icu_out = _icu(checker, icu, seed)
    seconds = time.perf_counter() - t0

    def clean_rate(names: Iterable[str]) -> dict[str, Any]:
        k = sum(clean[n]["flagged"] for n in names if n in clean)
        n = sum(clean[n]["n"] for n in names if n in clean)
        return _rate(k, n)

    out: dict[str, Any] = {
        "split": split,
        "seed": seed,
        "reports": used,
        "layouts": list(layouts),
        "clean_flagged": {
            "iu_style": clean_rate(IU_LAYOUTS),
            "mimic_style": clean_rate(MIMIC_LAYOUTS),
            "by_layout": {n: _rate(c["flagged"], c["n"]) for n, c in clean.items()},
        },
        "injected": {
            "overall": overall.to_dict(),
            **{
                f"by_{kind}": {k: v.to_dict() for k, v in sorted(g.items())}
                for kind, g in groups.items()
            },
        },
        "removed_findings": {
            "by_the_checker": removed.to_dict(),
            "text_signal_impression_not_in_findings": {
                **removed_signal.to_dict(),
                "clean_reports_with_signal": _rate(
                    signal_on_clean["flagged"], signal_on_clean["n"]
                ),
                "what": (
                    "measured only (not a checker flag): an impression finding FINDINGS never "
                    "mentions; clean cost on the first layout's clean reports"
                ),
            },
            "image_side": "generate-and-compare (medvlm.checking.model_checks) with a model",
        },
        "icu_fixtures": icu_out,
        "checks": checks,
        "seconds": round(seconds, 2),
    }
    if examples:
        out["examples"] = {"missed": misses, "clean_flagged": false_flags}
    return out


def _icu(checker: Checker, icu: Sequence[ReportRecord], seed: int) -> dict[str, Any]:
    flagged = 0
    injected = YardstickCounts()
    flagged_ids = []
    for record in icu:
        text = record.text or ""
        result = checker.check(read_report(record, checker.parser))
        if result.verdict_simple == "Y":
            flagged += 1
            flagged_ids.append(record.id)
        sections = _sections_of_raw(text)
        findings, impression = sections.get("findings"), sections.get("impression")
        if not findings or not impression:
            continue
        rng = random.Random(f"{seed}:{record.id}")
        cases = [c for c in cases_for(record.id, findings, impression, (), rng)]
        case = choose_case([c for c in cases if c.pattern in HEADLINE_PATTERNS], rng)
        if case is None:
            continue
        for layout in ("mimic_wrapped", "findings_first"):
            rendered = render(layout, case.findings, case.impression)
            parsed = read_report(rendered, checker.parser)
            res = checker.check(parsed)
            injected.add(res.verdict_simple == "Y", _points(parsed, res, case))
    return {
        "reports": len(icu),
        "clean_flagged": _rate(flagged, len(icu)),
        "clean_flagged_ids": flagged_ids,
        "injected": injected.to_dict(),
        "sentences": sum(len(split_sentences(r.text or "")) for r in icu),
    }
