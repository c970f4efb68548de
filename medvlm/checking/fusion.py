"""Fusion: one list of flags (duplicates merged across sources), severity policy, verdicts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Literal

from medvlm.checking.types import Flag
from medvlm.prompts.knowledge import KnowledgeBase
from medvlm.taxonomy import ComplexClass, ErrorSubtype, FlagSource, Severity

__all__ = ["FUSION_VERSION", "apply_severity_policy", "merge_flags", "verdicts"]

FUSION_VERSION = "1.0"
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_MODEL_VERDICT_CLASSES = {
    "insert": ComplexClass.INSERT,
    "remove": ComplexClass.REMOVE,
    "substitute": ComplexClass.SUBSTITUTE,
}


def apply_severity_policy(flag: Flag, kb: KnowledgeBase) -> Flag:
    """Critical: the side of a critical finding (pneumothorax) or of a line/tube, or a critical
    finding's presence; info: interval wording without a comparison; otherwise as raised, and
    model-only flags never above warning (they are unverified)."""
    entry = kb.findings.get(flag.concept or "")
    severity = flag.severity
    if (
        entry is not None
        and entry.critical
        and flag.subtype
        in (
            ErrorSubtype.LATERALITY,
            ErrorSubtype.NEGATION,
            ErrorSubtype.INSERT_FINDING,
            ErrorSubtype.REMOVE_FINDING,
        )
    ):
        severity = Severity.CRITICAL
    if flag.rule_id == "text.interval.no_comparison":
        severity = Severity.INFO
    if flag.source is FlagSource.MODEL and severity is Severity.CRITICAL:
        severity = Severity.WARNING
    return flag if severity is flag.severity else replace(flag, severity=severity)


def merge_flags(flags: Iterable[Flag]) -> list[Flag]:
    """Merge flags with the same key: the strongest is kept; independent sources that agree raise
    the confidence (noisy-OR over the best flag of each source); evidence lists every source."""
    groups: dict[str, list[Flag]] = {}
    for flag in flags:
        groups.setdefault(flag.key, []).append(flag)
    merged: list[Flag] = []
    for group in groups.values():
        best = max(group, key=lambda f: (_RANK[f.severity], f.confidence))
        if len(group) == 1:
            merged.append(best)
            continue
        per_source: dict[FlagSource, float] = {}
        for f in group:
            per_source[f.source] = max(per_source.get(f.source, 0.0), f.confidence)
        miss = 1.0
        for c in per_source.values():
            miss *= 1.0 - c
        sources: list[dict[str, Any]] = [
            {
                "source": f.source.value,
                "rule_id": f.rule_id,
                "confidence": f.confidence,
                "message": f.message,
            }
            for f in group
        ]
        evidence = {**best.evidence, "merged": sources}
        for key in ("boxes", "grounding"):  # a model's box survives a merge with a rule's flag
            if key not in evidence:
                carrier = next((f for f in group if key in f.evidence), None)
                if carrier is not None:
                    evidence[key] = carrier.evidence[key]
        severity = max((f.severity for f in group), key=lambda s: _RANK[s])
        merged.append(
            replace(best, confidence=round(1.0 - miss, 4), evidence=evidence, severity=severity)
        )
    merged.sort(
        key=lambda f: (
            -_RANK[f.severity],
            -f.confidence,
            f.section or "",
            -1 if f.sentence_index is None else f.sentence_index,
        )
    )
    return merged


def verdicts(
    flags: list[Flag],
    threshold: float,
    model_simple: str | None,
    model_complex: str | None,
    use_model_verdict: bool,
) -> tuple[Literal["Y", "N"], ComplexClass, str]:
    """Per-report SIMPLE verdict and COMPLEX class, with the reason.

    A report is erroneous ("Y") when a flag of at least warning severity reaches ``threshold``; its
    COMPLEX class is that of the strongest such flag. Without such a flag, the model's own answers
    decide only when both agree (SIMPLE "Y" and a COMPLEX error class), if enabled.
    """
    strong = [f for f in flags if f.severity is not Severity.INFO and f.confidence >= threshold]
    if strong:
        top = max(strong, key=lambda f: (_RANK[f.severity], f.confidence))
        return "Y", top.complex_class, f"flag {top.key}"
    if use_model_verdict and model_simple == "Y" and model_complex in _MODEL_VERDICT_CLASSES:
        return "Y", _MODEL_VERDICT_CLASSES[model_complex], "model SIMPLE and COMPLEX answers"
    return "N", ComplexClass.ORIGINAL, "no flag at or above the threshold"
