"""The one place that talks to medvlm's report parser and checker (in-process use).

Keeping these calls together means the evaluation follows the checker's own sentence splitter, so
``sentence_index`` in a dataset means what the checker's flags mean.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import dicom_io
import medvlm
from eval.errors import EvalError
from eval.records import JSONDict, LabelledRow
from medvlm.checking import RULESET_VERSION, Checker, HeaderFacts
from medvlm.reports import ParsedReport, ReportInputError, SectionName, parse_report, read_report

Span = tuple[int, int]


def normalize_findings(text: str) -> str:
    """The FINDINGS text as medvlm's parser holds it (sentence offsets refer to this form)."""
    section = ParsedReport.from_sections(findings=text).section(SectionName.FINDINGS)
    return "" if section is None else section.text


def split_sentences(text: str) -> list[Span]:
    """``(start, end)`` of each sentence of a FINDINGS text, as medvlm's parser splits it.

    ``text`` must be in the parser's normal form (`normalize_findings`), otherwise the offsets
    would not refer to it.
    """
    section = ParsedReport.from_sections(findings=text).section(SectionName.FINDINGS)
    if section is None:
        return []
    if section.text != text:
        raise EvalError(
            "findings text is not in medvlm's normal form, so sentence offsets would not match; "
            "pass it through eval.checker.normalize_findings first"
        )
    return [(s.start, s.end) for s in section.sentences]


def sections_of(text: str) -> tuple[str | None, str | None]:
    """``(findings, impression)`` of a raw report text, as medvlm's parser finds them."""
    parsed = parse_report(text)
    return parsed.text_of(SectionName.FINDINGS) or None, (
        parsed.text_of(SectionName.IMPRESSION) or None
    )


def check_row(checker: Checker, row: LabelledRow) -> JSONDict:
    """Run ``checker`` on one row exactly as the API would, return ``CheckResult.to_dict()``."""
    try:
        parsed = read_report(row.report_input())
    except ReportInputError as exc:
        raise EvalError(f"row {row.id}: {exc}") from None
    header = (
        HeaderFacts.from_dict(dict(row.header), parse_age=dicom_io.parse_age)
        if row.header is not None
        else None
    )
    result: JSONDict = checker.check(parsed, header=header).to_dict()
    return result


def default_checker() -> Checker:
    """medvlm's rule checker with no model runtime."""
    return Checker(runtime=None)


_CODE_PACKAGES = ("checking", "reports", "prompts")
_CODE_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".txt")


def checker_code_sha256() -> str:
    """SHA-256 over medvlm's checking, report parsing and prompt sources and data files.

    Part of the cache key, so edited rules are never answered from a stale cache even when
    nobody bumped ``RULESET_VERSION``.
    """
    root = Path(medvlm.__file__).resolve().parent
    digest = hashlib.sha256()
    for package in _CODE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and path.suffix in _CODE_SUFFIXES:
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()


def describe_checker(checker: Checker) -> dict[str, Any]:
    """What determines the checker's answers: ruleset, knowledge base, configuration, code."""
    return {
        "ruleset_version": RULESET_VERSION,
        "kb_version": checker.kb.version,
        "config": checker.config.to_dict(),
        "code_sha256": checker_code_sha256(),
    }
