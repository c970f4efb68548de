"""Read a :class:`medvlm.report_input.ReportInput` into a parsed report, by the one rule."""

from __future__ import annotations

from medvlm.report_input import NO_FINDINGS_IN_TEXT, ReportInput, ReportInputError
from medvlm.reports.model import SectionName
from medvlm.reports.parser import ParsedReport, ReportParser, default_parser

__all__ = ["read_report"]


def read_report(report: ReportInput, parser: ReportParser | None = None) -> ParsedReport:
    """The parsed report, or ``ReportInputError`` naming what is wrong and how to fix it.

    The rule of :mod:`medvlm.report_input`: text or sections, not both; FINDINGS or IMPRESSION
    text needed (a raw text with neither heading nor unheaded text is refused).
    """
    report.check_shape()
    parser = parser if parser is not None else default_parser()
    if report.text is None:
        return parser.parse_sections(
            {SectionName(name): value for name, value in report.sections().items()}
        )
    parsed = parser.parse(report.text)
    if parsed.section(SectionName.FINDINGS) is None and (
        parsed.section(SectionName.IMPRESSION) is None
    ):
        raise ReportInputError(NO_FINDINGS_IN_TEXT)
    return parsed
