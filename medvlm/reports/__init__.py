"""Report parsing: sections, sentences with character spans, and finding mentions."""

from medvlm.report_input import REPORT_FIELDS, SECTION_FIELDS, ReportInput, ReportInputError
from medvlm.reports.input import read_report
from medvlm.reports.model import (
    Measurement,
    Mention,
    Presence,
    Section,
    SectionName,
    Sentence,
    Side,
)
from medvlm.reports.parser import (
    ParsedReport,
    ReportParseError,
    ReportParser,
    default_parser,
    parse_report,
)

__all__ = [
    "REPORT_FIELDS",
    "SECTION_FIELDS",
    "Measurement",
    "Mention",
    "ParsedReport",
    "Presence",
    "ReportInput",
    "ReportInputError",
    "ReportParseError",
    "ReportParser",
    "Section",
    "SectionName",
    "Sentence",
    "Side",
    "default_parser",
    "parse_report",
    "read_report",
]
