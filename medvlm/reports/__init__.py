"""Report parsing: sections, sentences with character spans, and finding mentions."""

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
    "Measurement",
    "Mention",
    "ParsedReport",
    "Presence",
    "ReportParseError",
    "ReportParser",
    "Section",
    "SectionName",
    "Sentence",
    "Side",
    "default_parser",
    "parse_report",
]
