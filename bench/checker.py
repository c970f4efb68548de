"""Text + header checker benchmark and quality measurement on the IU X-ray reports.

    nice python bench/checker.py                      # speed + quality, JSON to bench/results/checker.json
    nice python bench/checker.py --compare-medspacy 300

Speed: single process, one core. Per report it times ``parse`` (sections, sentences, mentions) plus
``check`` (text and header rules, fusion); the target is >= 1,000 reports/s and p95 <= 5 ms.

Length: seconds per report against its length (1 K characters to the parser's cap) for a synthetic
report of realistic, mutually contradicting sentences, with and without periods (issue 16.1).

Quality: the honest yardstick of ``python -m eval yardstick`` (``eval.yardstick``; injected by
``eval.contradictions`` without the checker's parser, never written out: the IU reports are
CC BY-NC-ND), on ``--split dev`` by default; ``--split test`` is the frozen split quoted in
docs/eval.md and the README.

``--compare-medspacy N`` runs medspaCy 1.3's own pipeline (PyRuSH sentences, TargetMatcher with the
same KB terms, ConText) on N reports and reports its speed and its agreement with our assertions.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"
sys.path.insert(0, str(ROOT))

from eval.corpora import load_iu  # noqa: E402
from eval.records import ReportRecord  # noqa: E402
from eval.yardstick import load_icu_fixtures, run_yardstick  # noqa: E402
from medvlm.checking import Checker, HeaderFacts  # noqa: E402
from medvlm.reports import SectionName, read_report  # noqa: E402


def header_for(report: ReportRecord) -> HeaderFacts:
    """Header facts consistent with the report's own words (so clean reports stay clean): the IU
    archive has no DICOM headers, and the header rules are tested with written reports instead."""
    text = " ".join(t for t in (report.indication, report.findings, report.impression) if t).lower()
    female = re.search(r"\b(?:female|woman|she|her|mastectom\w*|breast\w*|lumpectomy)\b", text)
    view = "AP" if re.search(r"\bap\b|portable|supine", text) else "PA"
    return HeaderFacts(
        patient_sex="F" if female else "M", view_position=view, body_part="CHEST", modality="CR"
    )


# -- speed ---------------------------------------------------------------------------------------


def bench_speed(checker: Checker, reports: list[ReportRecord], repeats: int) -> dict[str, Any]:
    work = [(r, header_for(r)) for r in reports if r.findings or r.impression]
    for r, h in work[:200]:  # warm-up
        checker.check(read_report(r, checker.parser), h)
    latencies: list[float] = []
    parse_ms: list[float] = []
    cpu: list[float] = []
    t_all, c_all = time.perf_counter(), time.thread_time()
    for _ in range(repeats):
        for r, h in work:
            t0, c0 = time.perf_counter(), time.thread_time()
            parsed = read_report(r, checker.parser)
            t1 = time.perf_counter()
            checker.check(parsed, h)
            t2, c2 = time.perf_counter(), time.thread_time()
            parse_ms.append((t1 - t0) * 1000)
            latencies.append((t2 - t0) * 1000)
            cpu.append((c2 - c0) * 1000)
    wall, cpu_s = time.perf_counter() - t_all, time.thread_time() - c_all
    latencies.sort()
    cpu.sort()
    n = len(latencies)
    return {
        "reports": n,
        "reports_per_s": round(n / wall, 1),
        "latency_ms": {
            "mean": round(statistics.fmean(latencies), 3),
            "p50": round(latencies[n // 2], 3),
            "p95": round(latencies[int(n * 0.95)], 3),
            "p99": round(latencies[int(n * 0.99)], 3),
            "max": round(latencies[-1], 3),
        },
        # CPU time of this thread: what one core of our own gives, whatever else the machine runs
        # (the wall-clock figures above include time spent waiting for a shared core).
        "cpu_reports_per_s": round(n / cpu_s, 1),
        "cpu_ms": {
            "mean": round(statistics.fmean(cpu), 3),
            "p50": round(cpu[n // 2], 3),
            "p95": round(cpu[int(n * 0.95)], 3),
            "p99": round(cpu[int(n * 0.99)], 3),
        },
        "parse_ms_mean": round(statistics.fmean(parse_ms), 3),
        "targets": {"reports_per_s": 1000, "p95_ms": 5.0},
        "what": "parse (sections, sentences, mentions) + text and header rules + fusion, one core",
    }


# -- time per report against length (issue 16.1) -----------------------------------------------

_LONG_FINDINGS = (
    "There is a small left pleural effusion.",
    "No pneumothorax is seen.",
    "Mild cardiomegaly.",
    "Right lower lobe consolidation.",
    "Moderate right basilar atelectasis.",
    "A right PICC line ends in the SVC.",
    "Left lung nodule measures 8 mm.",
    "The lungs are otherwise clear.",
)
_LONG_IMPRESSION = (
    "Small right pleural effusion.",
    "Right pneumothorax.",
    "Severe cardiomegaly.",
    "Left lower lobe consolidation.",
    "No acute cardiopulmonary disease.",
)
LENGTHS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)


def long_report(chars: int, joiner: str = " ") -> str:
    """A synthetic report of about ``chars`` characters made of realistic sentences that contradict
    each other across sections (the worst case for the pairing rules); ``joiner="\n"`` with the
    periods dropped gives lines without periods."""

    def fill(sentences: tuple[str, ...], budget: float) -> str:
        out: list[str] = []
        size = i = 0
        while size < budget:
            s = sentences[i % len(sentences)]
            out.append(s if joiner == " " else s.rstrip("."))
            size += len(out[-1]) + len(joiner)
            i += 1
        return joiner.join(out)

    findings = fill(_LONG_FINDINGS, chars * 0.6 - 25)
    impression = fill(_LONG_IMPRESSION, chars * 0.4 - 25)
    return f"FINDINGS: {findings}\nIMPRESSION: {impression}"[:chars]


def bench_length(checker: Checker, max_chars: int, budget_s: float = 60.0) -> dict[str, Any]:
    """Seconds to parse and check one report against its length, for sentences and for lines
    without periods (JSON curve; near-linear means seconds / length stays about flat)."""
    out: dict[str, Any] = {"max_chars": max_chars, "curves": {}}
    for shape, joiner in (("sentences", " "), ("lines_without_periods", "\n")):
        curve = []
        for n in [x for x in LENGTHS if x <= max_chars]:
            text = long_report(n, joiner)
            best = float("inf")
            flags = 0
            for _ in range(3):
                t0 = time.perf_counter()
                res = checker.check(checker.parse(text))
                best = min(best, time.perf_counter() - t0)
                flags = len(res.flags)
            curve.append(
                {
                    "chars": len(text),
                    "seconds": round(best, 4),
                    "us_per_char": round(best / len(text) * 1e6, 3),
                    "flags": flags,
                }
            )
            if best * 3 > budget_s:
                break
        out["curves"][shape] = curve
    first, last = out["curves"]["sentences"][0], out["curves"]["sentences"][-1]
    out["growth_exponent"] = round(
        math.log(last["seconds"] / first["seconds"]) / math.log(last["chars"] / first["chars"]), 3
    )
    out["what"] = (
        "best of 3, parse + check of one synthetic report; growth_exponent = slope of log(time) "
        "against log(length) (1 = linear; issue 16 measured ~3 before the fix)"
    )
    return out


# -- quality: the honest yardstick (eval.yardstick) ----------------------------------------------


def bench_quality(
    checker: Checker, reports: list[ReportRecord], split: str, seed: int, limit: int | None
) -> dict[str, Any]:
    """The yardstick of ``python -m eval yardstick`` on one split: contradictions injected by
    ``eval.contradictions`` (sites chosen without the checker's parser), eight layouts, per
    pattern and layout with Wilson CIs, clean reports flagged (IU and MIMIC-style apart)."""
    return run_yardstick(
        reports, split=split, seed=seed, limit=limit, icu=load_icu_fixtures(), checker=checker
    )


# -- medspaCy comparison ---------------------------------------------------------------------------


def compare_medspacy(checker: Checker, reports: list[ReportRecord], n: int) -> dict[str, Any]:
    import medspacy
    from loguru import logger as loguru_logger
    from medspacy.ner import TargetRule

    loguru_logger.disable("PyRuSH")
    nlp = medspacy.load(enable=["medspacy_pyrush", "medspacy_target_matcher", "medspacy_context"])
    matcher = nlp.get_pipe("medspacy_target_matcher")
    rules = []
    for f in checker.kb.findings.values():
        for frag in f.synonyms:
            rules.append(TargetRule(f.name, f.id, pattern=rf"(?i)\b{frag}\b"))
    matcher.add(rules)
    sample = [r for r in reports if r.findings and r.impression][:n]
    texts = [f"{r.findings} {r.impression}" for r in sample]
    t0 = time.perf_counter()
    docs = [nlp(t) for t in texts]
    medspacy_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [checker.parser.parse_sections({SectionName.FINDINGS: t}) for t in texts]
    ours_s = time.perf_counter() - t0
    agree = total = 0
    confusion: Counter[str] = Counter()
    for doc, parsed in zip(docs, ours, strict=True):
        section = parsed.section(SectionName.FINDINGS)
        if section is None:
            continue
        mine = {}
        for _sentence, m in section.mentions():
            if not m.normal_phrase:
                mine[(m.start, m.concept)] = m.presence.value
        for ent in doc.ents:
            key = (ent.start_char, ent.label_)
            if key not in mine:
                continue
            theirs = (
                "absent"
                if ent._.is_negated
                else ("uncertain" if ent._.is_uncertain or ent._.is_hypothetical else "present")
            )
            total += 1
            agree += theirs == mine[key]
            confusion[f"ours={mine[key]} medspacy={theirs}"] += 1
    return {
        "reports": len(sample),
        "medspacy_reports_per_s": round(len(sample) / medspacy_s, 1),
        "ours_parse_reports_per_s": round(len(sample) / ours_s, 1),
        "matched_mentions": total,
        "assertion_agreement": round(agree / max(total, 1), 4),
        "confusion": dict(confusion.most_common()),
        "pipeline": "medspacy.load(pyrush, target_matcher with the KB regexes, context default rules)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "checker.json")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--no-length", action="store_true", help="skip the time-vs-length curve")
    ap.add_argument("--split", default="dev", choices=["dev", "test", "all"])
    ap.add_argument("--limit", type=int, default=None, help="reports of the split to use")
    ap.add_argument("--compare-medspacy", type=int, default=0, metavar="N")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"IU reports not found at {args.data}; pass --data PATH", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    checker = Checker()
    build_ms = (time.perf_counter() - t0) * 1000
    reports = sorted(load_iu(args.data), key=lambda r: int(re.sub(r"\D", "", r.id) or 0))
    result: dict[str, Any] = {
        "benchmark": "checker",
        "data": "IU X-ray reports (NLMCXR_reports.tgz)",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "checker_build_ms": round(build_ms, 1),
        "kb_version": checker.kb.version,
    }
    if not args.no_speed:
        result["speed"] = bench_speed(checker, reports, args.repeats)
    if not args.no_length:
        from medvlm.reports.parser import MAX_REPORT_CHARS

        result["length"] = bench_length(checker, MAX_REPORT_CHARS)
    if not args.no_quality:
        result["quality"] = bench_quality(checker, reports, args.split, args.seed, args.limit)
    if args.compare_medspacy:
        result["medspacy"] = compare_medspacy(checker, reports, args.compare_medspacy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
