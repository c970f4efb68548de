"""The one place that talks to medvlm's report parser and checker (in-process use).

Keeping these calls together means the evaluation follows the checker's own sentence splitter, so
``sentence_index`` in a dataset means what the checker's flags mean.
"""

from __future__ import annotations

from typing import Any

from eval.records import JSONDict, LabelledRow

Span = tuple[int, int]


def split_sentences(text: str) -> list[Span]:
    """``(start, end)`` of each sentence of a FINDINGS text, as medvlm's parser splits it."""
    from medvlm.reports import ParsedReport

    parsed = ParsedReport.from_sections(findings=text)
    return [(s.start, s.end) for s in parsed.findings.sentences]


def sections_of(text: str) -> tuple[str | None, str | None]:
    """``(findings, impression)`` of a raw report text, as medvlm's parser finds them."""
    from medvlm.reports import parse_report

    parsed = parse_report(text)
    findings = parsed.findings.text if parsed.findings else None
    impression = parsed.impression.text if parsed.impression else None
    return findings, impression


def check_row(checker: Any, row: LabelledRow) -> JSONDict:
    """Run ``checker`` on one row exactly as the API would, return ``CheckResult.to_dict()``."""
    from medvlm.checking import HeaderFacts
    from medvlm.reports import ParsedReport, parse_report

    if row.text is not None:
        parsed = parse_report(row.text)
    else:
        parsed = ParsedReport.from_sections(
            findings=row.findings,
            impression=row.impression,
            indication=row.indication,
            comparison=row.comparison,
        )
    header = HeaderFacts.from_dict(dict(row.header)) if row.header is not None else None
    result: JSONDict = checker.check(parsed, header=header).to_dict()
    return result


def default_checker() -> Any:
    """medvlm's rule checker with no model runtime."""
    from medvlm.checking import Checker

    return Checker(runtime=None)
