"""Text + header checker benchmark and quality measurement on the IU X-ray reports.

    nice python bench/checker.py                      # speed + quality, JSON to bench/results/checker.json
    nice python bench/checker.py --compare-medspacy 300

Speed: single process, one core. Per report it times ``parse`` (sections, sentences, mentions) plus
``check`` (text and header rules, fusion); the target is >= 1,000 reports/s and p95 <= 5 ms.

Quality: (1) clean reports flagged (verdict "Y"; also "any flag") for IU sections and for the same
reports rendered as MIMIC-style raw text; (2) injected contradictions caught (verdict "Y") and
pointed at (a flag at warning or above on the modified FINDINGS sentence). Injections are made here
at run time and never written out (the reports are CC BY-NC-ND): side flip, negation flip in both
directions, severity change, an inserted finding the impression denies, a finding the impression
calls normal. Each is applied only where another part of the report states the counterpart (the
impression mentions the same finding with a side / a grade / a presence), which is what "an error
that contradicts another part of the report" means.

``--compare-medspacy N`` runs medspaCy 1.3's own pipeline (PyRuSH sentences, TargetMatcher with the
same KB terms, ConText) on N reports and reports its speed and its agreement with our assertions.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import re
import statistics
import sys
import tarfile
import textwrap
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"
sys.path.insert(0, str(ROOT))

from medvlm.checking import Checker, CheckResult, HeaderFacts  # noqa: E402
from medvlm.reports import ParsedReport, Presence, SectionName, Side  # noqa: E402
from medvlm.taxonomy import Severity  # noqa: E402


@dataclass(frozen=True)
class IUReport:
    id: str
    findings: str | None
    impression: str | None
    indication: str | None
    comparison: str | None


def load_iu(path: Path) -> list[IUReport]:
    """Read the IU XML reports from the tgz (read-only, in memory)."""
    out: list[IUReport] = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.endswith(".xml"):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            root = ET.fromstring(handle.read())  # noqa: S314 (local, trusted archive)
            fields = {a.get("Label"): (a.text or "").strip() for a in root.iter("AbstractText")}
            out.append(
                IUReport(
                    id=Path(member.name).stem,
                    findings=fields.get("FINDINGS") or None,
                    impression=fields.get("IMPRESSION") or None,
                    indication=fields.get("INDICATION") or None,
                    comparison=fields.get("COMPARISON") or None,
                )
            )
    out.sort(key=lambda r: int(re.sub(r"\D", "", r.id) or 0))
    return out


def header_for(report: IUReport) -> HeaderFacts:
    """Header facts consistent with the report's own words (so clean reports stay clean): the IU
    archive has no DICOM headers, and the header rules are tested with written reports instead."""
    text = " ".join(t for t in (report.indication, report.findings, report.impression) if t).lower()
    female = re.search(r"\b(?:female|woman|she|her|mastectom\w*|breast\w*|lumpectomy)\b", text)
    view = "AP" if re.search(r"\bap\b|portable|supine", text) else "PA"
    return HeaderFacts(
        patient_sex="F" if female else "M", view_position=view, body_part="CHEST", modality="CR"
    )


def parse_sections(checker: Checker, r: IUReport, findings: str | None = None) -> ParsedReport:
    return checker.parser.parse_sections(
        {
            SectionName.FINDINGS: r.findings if findings is None else findings,
            SectionName.IMPRESSION: r.impression,
            SectionName.INDICATION: r.indication,
            SectionName.COMPARISON: r.comparison,
        }
    )


def mimic_text(r: IUReport, findings: str | None = None) -> str:
    """The same report as MIMIC-style raw text: FINAL REPORT, upper-case headers, wrapped lines,
    numbered impressions, ``___`` redactions."""

    def wrap(text: str) -> str:
        return "\n".join(" " + line for line in textwrap.wrap(text.replace("XXXX", "___"), 66))

    parts = ["                                 FINAL REPORT", " EXAMINATION:  CHEST (PA AND LAT)"]
    if r.indication:
        parts.append(" INDICATION:  " + r.indication.replace("XXXX", "___"))
    if r.comparison:
        parts.append(" COMPARISON:  " + r.comparison.replace("XXXX", "___"))
    body = r.findings if findings is None else findings
    if body:
        parts.append(" FINDINGS:\n \n" + wrap(body))
    if r.impression:
        pieces = re.split(r"(?<=\.)\s+", r.impression)
        sentences = [re.sub(r"^\d+\.\s+", "", p.strip()) for p in pieces]
        sentences = [p for p in sentences if p.strip(" .") and not re.fullmatch(r"\d+\.", p)]
        if len(sentences) > 1:
            items = "\n".join(f" {i}. {s}" for i, s in enumerate(sentences, 1))
        else:
            items = wrap(r.impression)
        parts.append(" IMPRESSION:\n \n" + items.replace("XXXX", "___"))
    return "\n \n".join(parts) + "\n"


# -- speed ---------------------------------------------------------------------------------------


def bench_speed(checker: Checker, reports: list[IUReport], repeats: int) -> dict[str, Any]:
    work = [(r, header_for(r)) for r in reports if r.findings or r.impression]
    for r, h in work[:200]:  # warm-up
        checker.check(parse_sections(checker, r), h)
    latencies: list[float] = []
    parse_ms: list[float] = []
    t_all = time.perf_counter()
    for _ in range(repeats):
        for r, h in work:
            t0 = time.perf_counter()
            parsed = parse_sections(checker, r)
            t1 = time.perf_counter()
            checker.check(parsed, h)
            t2 = time.perf_counter()
            parse_ms.append((t1 - t0) * 1000)
            latencies.append((t2 - t0) * 1000)
    wall = time.perf_counter() - t_all
    latencies.sort()
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


# -- injection -----------------------------------------------------------------------------------

_SIDE_SWAP = {"left": "right", "right": "left"}
_SEVERITY_SWAP = {
    "mild": "severe",
    "mildly": "severely",
    "small": "large",
    "large": "small",
    "severe": "mild",
    "severely": "mildly",
    "moderate": "mild",
    "moderately": "mildly",
    "minimal": "moderate",
    "trace": "large",
    "tiny": "large",
    "marked": "mild",
    "markedly": "mildly",
    "massive": "small",
    "extensive": "minimal",
}
_SEVERITY_WORD = re.compile(r"\b(" + "|".join(_SEVERITY_SWAP) + r")\b", re.I)
_NO_START = re.compile(r"^(?:there (?:is|are) no|no(?: evidence of)?)\s+", re.I)
_INSERTS = {
    "pneumothorax": ["There is a small right apical pneumothorax.", "Small left pneumothorax."],
    "pleural_effusion": [
        "There is a small left pleural effusion.",
        "Moderate right pleural effusion.",
    ],
    "consolidation": [
        "Focal consolidation in the right lower lobe.",
        "There is left lower lobe consolidation.",
    ],
    "pneumonia": ["Right lower lobe pneumonia."],
    "edema": ["Mild interstitial pulmonary edema."],
    "cardiomegaly": ["The heart is moderately enlarged."],
    "lung_lesion": ["There is a 1.2 cm nodule in the right upper lobe."],
    "pneumoperitoneum": ["Free air under the right hemidiaphragm."],
}
_ACUTE_INSERTS = ("pneumothorax", "pleural_effusion", "consolidation", "pneumonia", "edema")
_NONACUTE_INSERTS = ("cardiomegaly", "lung_lesion")


def _case(src: str, word: str) -> str:
    return word.capitalize() if src[:1].isupper() else word


@dataclass(frozen=True)
class Injected:
    kind: str
    findings: str
    sentence_index: int


def _sentences(parsed: ParsedReport, name: SectionName) -> list[Any]:
    section = parsed.section(name)
    return [] if section is None else list(section.sentences)


def injections(checker: Checker, r: IUReport, rng: random.Random) -> Iterator[Injected]:
    """Every applicable contradiction for a report (the caller samples one)."""
    parsed = parse_sections(checker, r)
    kb = checker.kb
    f_sents = _sentences(parsed, SectionName.FINDINGS)
    i_sents = _sentences(parsed, SectionName.IMPRESSION)
    if not f_sents or not i_sents:
        return
    ftext = parsed.text_of(SectionName.FINDINGS)
    i_mentions = [m for s in i_sents for m in s.mentions if not m.historical]

    def replaced(sent: Any, new: str) -> str:
        return ftext[: sent.start] + new + ftext[sent.end :]

    for s in f_sents:
        for m in s.mentions:
            if m.historical or kb[m.concept].category.value == "generic":
                continue
            present = m.presence is Presence.PRESENT
            # side flip: the impression gives the same finding the same side
            sided_in_i = any(
                im.presence is Presence.PRESENT
                and im.laterality is m.laterality
                and kb.same_side_group(im.concept, m.concept)
                for im in i_mentions
            )
            if present and m.laterality in (Side.LEFT, Side.RIGHT) and sided_in_i:
                new = re.sub(
                    r"\b(left|right|Left|Right)\b",
                    lambda x: _case(x.group(0), _SIDE_SWAP[x.group(0).lower()]),
                    s.text,
                )
                yield Injected("side_flip", replaced(s, new), s.index)
            # severity change: the impression grades the same finding
            graded_in_i = any(im.concept == m.concept and im.grades & m.grades for im in i_mentions)
            w = _SEVERITY_WORD.search(s.text)
            if present and m.grades and graded_in_i and w:
                swap = _case(w.group(0), _SEVERITY_SWAP[w.group(0).lower()])
                new = s.text[: w.start()] + swap + s.text[w.end() :]
                yield Injected("severity_change", replaced(s, new), s.index)
            # negation flip present -> absent: the impression asserts the same finding
            asserted_in_i = any(
                im.concept == m.concept and im.presence is Presence.PRESENT and not im.grades
                for im in i_mentions
            )
            if present and not _NO_START.match(s.text) and asserted_in_i:
                there = re.match(r"(there (?:is|are)) (?:an? )?", s.text, re.I)
                new = (
                    f"{there.group(1)} no {s.text[there.end() :]}"
                    if there
                    else "No " + s.text[0].lower() + s.text[1:]
                )
                yield Injected("negation_flip_to_absent", replaced(s, new), s.index)
        # negation flip absent -> present: impression denies it (specifically or generically)
        nm = _NO_START.match(s.text)
        if nm and s.mentions:
            first = s.mentions[0]
            denied_in_i = any(
                im.presence is Presence.ABSENT
                and kb.covers(im.concept, first.concept)
                and "otherwise" not in im.qualifiers
                and not im.grades
                for im in i_mentions
            )
            if denied_in_i and kb[first.concept].category.value != "generic":
                yield Injected(
                    "negation_flip_to_present",
                    replaced(s, "There is " + s.text[nm.end() :]),
                    s.index,
                )
    # inserted findings
    specific = {
        im.concept
        for im in i_mentions
        if im.presence is Presence.ABSENT and not im.grades and not im.qualifiers
    }
    generic_acute = any(
        im.presence is Presence.ABSENT
        and im.concept == "no_acute_disease"
        and not im.qualifiers - {"acute"}
        for im in i_mentions
    )
    normal = any(
        im.presence is Presence.ABSENT and im.concept == "normal_study" for im in i_mentions
    )
    mentioned = {m.concept for s in f_sents for m in s.mentions}
    pos = rng.randrange(len(f_sents) + 1)

    def insert(sentence: str) -> str:
        if pos == len(f_sents):
            return ftext.rstrip() + " " + sentence
        at = f_sents[pos].start
        return ftext[:at] + sentence + " " + ftext[at:]

    for concept in sorted(specific & set(_INSERTS)):
        if concept not in mentioned:
            yield Injected("insert_denied", insert(rng.choice(_INSERTS[concept])), pos)
    if generic_acute or normal:
        choices = [c for c in _ACUTE_INSERTS if c not in mentioned and c not in specific]
        if choices:
            yield Injected(
                "insert_called_normal", insert(rng.choice(_INSERTS[rng.choice(choices)])), pos
            )
    if normal:
        choices = [c for c in _NONACUTE_INSERTS if c not in mentioned]
        if choices:
            yield Injected(
                "insert_called_normal", insert(rng.choice(_INSERTS[rng.choice(choices)])), pos
            )
    elif generic_acute:
        choices = [c for c in _NONACUTE_INSERTS if c not in mentioned]
        if choices:
            yield Injected(
                "insert_significant_vs_no_acute",
                insert(rng.choice(_INSERTS[rng.choice(choices)])),
                pos,
            )


def _points_at(result: CheckResult, index: int) -> bool:
    return any(
        f.section == "findings" and f.sentence_index == index and f.severity is not Severity.INFO
        for f in result.flags
    )


def bench_quality(
    checker: Checker,
    reports: list[IUReport],
    seed: int,
    show: int,
    args_kind: str | None = None,
) -> dict[str, Any]:
    clean = [r for r in reports if r.findings or r.impression]
    out: dict[str, Any] = {}
    for style in ("iu_sections", "mimic_raw_text"):
        flagged = any_flag = 0
        rules: Counter[str] = Counter()
        for r in clean:
            if style == "iu_sections":
                parsed = parse_sections(checker, r)
            else:
                parsed = checker.parse(mimic_text(r))
            res = checker.check(parsed, header_for(r))
            flagged += res.verdict_simple == "Y"
            any_flag += bool(res.flags)
            rules.update(f.rule_id for f in res.flags)
        out[f"clean_{style}"] = {
            "reports": len(clean),
            "flagged_verdict_Y": flagged,
            "flagged_rate": round(flagged / len(clean), 4),
            "any_flag_rate": round(any_flag / len(clean), 4),
            "flags_by_rule": dict(rules.most_common()),
        }
    rng = random.Random(seed)
    per_kind: dict[str, Counter[str]] = {}
    misses: list[dict[str, Any]] = []
    for style in ("iu_sections", "mimic_raw_text"):
        for r in clean:
            options = list(injections(checker, r, random.Random(f"{seed}:{r.id}")))
            if not options:
                continue
            inj = rng.choice(options)
            if style == "iu_sections":
                parsed = parse_sections(checker, r, findings=inj.findings)
            else:
                parsed = checker.parse(mimic_text(r, findings=inj.findings))
            res = checker.check(parsed, header_for(r))
            c = per_kind.setdefault(f"{style}:{inj.kind}", Counter())
            c["n"] += 1
            c["caught"] += res.verdict_simple == "Y"
            c["pointed"] += res.verdict_simple == "Y" and _points_at(res, inj.sentence_index)
            if (
                style == "iu_sections"
                and "significant" not in inj.kind
                and (args_kind is None or inj.kind == args_kind)
                and not (res.verdict_simple == "Y" and _points_at(res, inj.sentence_index))
                and len(misses) < show
            ):
                sent = parsed.section(SectionName.FINDINGS)
                text = (
                    sent.sentences[inj.sentence_index].text
                    if sent and inj.sentence_index < len(sent.sentences)
                    else "?"
                )
                misses.append(
                    {
                        "kind": inj.kind,
                        "sentence": text,
                        "impression": r.impression,
                        "flags": [f.message for f in res.flags],
                    }
                )
    summary: dict[str, Any] = {}
    for style in ("iu_sections", "mimic_raw_text"):
        n = caught = pointed = 0
        kinds = {}
        for key, c in sorted(per_kind.items()):
            if not key.startswith(style) or key.endswith("insert_significant_vs_no_acute"):
                if key.startswith(style):
                    kinds[key.split(":")[1] + " (significant, not acute: counted apart)"] = _rates(
                        c
                    )
                continue
            kinds[key.split(":")[1]] = _rates(c)
            n += c["n"]
            caught += c["caught"]
            pointed += c["pointed"]
        summary[f"injected_{style}"] = {
            "n": n,
            "caught_rate": round(caught / max(n, 1), 4),
            "caught_and_pointed_rate": round(pointed / max(n, 1), 4),
            "by_kind": kinds,
        }
    out.update(summary)
    if show:
        out["examples_missed_local_only"] = misses
    return out


def _rates(c: Counter[str]) -> dict[str, Any]:
    n = max(c["n"], 1)
    return {"n": c["n"], "caught": round(c["caught"] / n, 4), "pointed": round(c["pointed"] / n, 4)}


# -- medspaCy comparison ---------------------------------------------------------------------------


def compare_medspacy(checker: Checker, reports: list[IUReport], n: int) -> dict[str, Any]:
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
    ap.add_argument("--show-misses", type=int, default=0)
    ap.add_argument("--miss-kind", default=None, help="only show misses of this injection kind")
    ap.add_argument("--compare-medspacy", type=int, default=0, metavar="N")
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"IU reports not found at {args.data}; pass --data PATH", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    checker = Checker()
    build_ms = (time.perf_counter() - t0) * 1000
    reports = load_iu(args.data)
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
        result["quality"] = bench_quality(
            checker, reports, args.seed, args.show_misses, args.miss_kind
        )
    if args.compare_medspacy:
        result["medspacy"] = compare_medspacy(checker, reports, args.compare_medspacy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
