"""Report intake: every submission is a new version; earlier versions are kept."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Report, Study
from app.services import audit
from app.services.errors import InvalidInputError, NotFoundError, ReportTooLargeError
from medvlm.reports import (
    SECTION_FIELDS,
    ParsedReport,
    ReportInput,
    ReportInputError,
    read_report,
)

__all__ = [
    "DEFAULT_MAX_REPORT_CHARS",
    "ReportSections",
    "ReportSubmission",
    "check_report_size",
    "parse_report_input",
    "parsed_from_row",
    "submit_report",
    "validate_submission",
]


# RADCHECK_CHECKS__MAX_REPORT_CHARS's default: a chest X-ray report is rarely above 3,000 characters.
DEFAULT_MAX_REPORT_CHARS = 20_000
MAX_REPORT_SETTING = "RADCHECK_CHECKS__MAX_REPORT_CHARS"


@dataclass(frozen=True, slots=True)
class ReportSubmission(ReportInput):
    """A report version to store: the report fields and rule of :class:`medvlm.reports.ReportInput`
    (either the sections, or the raw text, which is split into sections) and its RIS metadata."""

    accession_number: str | None = None
    result_status: str | None = None  # HL7 P, F, C or X (None: not given)


@dataclass(frozen=True)
class ReportSections:
    """The sections a report version stores, after validation."""

    findings: str | None
    impression: str | None
    indication: str | None
    comparison: str | None
    technique: str | None


def _section_text(parsed: ParsedReport, name: str) -> str | None:
    section = parsed.section(name)
    return section.text if section is not None and section.text.strip() else None


def check_report_size(texts: list[str | None], *, max_chars: int) -> None:
    """``ReportTooLargeError`` when the report's parts together exceed ``max_chars`` characters.

    Checked before parsing: the checker's cost grows with the report's length.
    """
    total = sum(len(t) for t in texts if t)
    if total > max_chars:
        raise ReportTooLargeError(
            f"The report is {total} characters long; the limit is {max_chars} "
            f"({MAX_REPORT_SETTING}). A chest X-ray report is rarely above 3,000 characters: "
            "check that the right text was sent, or raise the limit."
        )


def parse_report_input(
    report: ReportInput, *, max_chars: int = DEFAULT_MAX_REPORT_CHARS
) -> ParsedReport:
    """The parsed report, after the one set of rules for every report door.

    ``ReportTooLargeError`` past ``max_chars`` (checked first), ``InvalidInputError`` naming the
    fix when the fields break :class:`medvlm.reports.ReportInput`'s rule (text or sections, not
    both; FINDINGS or IMPRESSION needed). Used by ``POST /check-report``, report submission
    (JSON API, HL7 ORU^R01, the demo) alike.
    """
    check_report_size(report.parts(), max_chars=max_chars)
    try:
        return read_report(report)
    except ReportInputError as exc:
        raise InvalidInputError(str(exc)) from exc


def validate_submission(
    submission: ReportInput, *, max_chars: int = DEFAULT_MAX_REPORT_CHARS
) -> ReportSections:
    """The report's sections, or ``InvalidInputError`` naming what is wrong and how to fix it.

    The rules of :func:`parse_report_input`; a report longer than ``max_chars`` raises
    ``ReportTooLargeError`` (an ``InvalidInputError`` too). Given sections are stored as sent; a
    raw text is stored as the sections found in it.
    """
    parsed = parse_report_input(submission, max_chars=max_chars)
    if submission.text is None:
        return ReportSections(**submission.sections())
    return ReportSections(**{name: _section_text(parsed, name) for name in SECTION_FIELDS})


def submit_report(
    session: Session,
    *,
    study_uid: str,
    submission: ReportSubmission,
    actor: str,
    max_chars: int = DEFAULT_MAX_REPORT_CHARS,
) -> Report:
    """Store a new version of the study's report."""
    query = select(Study).where(Study.study_instance_uid == study_uid)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # serialises version numbering per study
    study = session.scalar(query)
    if study is None:
        raise NotFoundError(
            f"No study with StudyInstanceUID {study_uid!r}: upload its images first "
            "(POST /api/v1/instances), then submit the report."
        )
    sections = validate_submission(submission, max_chars=max_chars)
    version = (
        session.scalar(select(func.max(Report.version)).where(Report.study_id == study.id)) or 0
    ) + 1
    report = Report(
        study_id=study.id,
        accession_number=submission.accession_number or study.accession_number,
        version=version,
        findings=sections.findings,
        impression=sections.impression,
        indication=sections.indication,
        comparison=sections.comparison,
        technique=sections.technique,
        raw_text=submission.text,
        result_status=submission.result_status,
        submitted_by=actor,
    )
    session.add(report)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="report.submitted",
        study_id=study.id,
        object_type="report",
        object_id=report.id,
        details={"version": version, "result_status": submission.result_status},
    )
    return report


def parsed_from_row(report: Report) -> ParsedReport:
    """The stored sections as the checker's parsed report."""
    return ParsedReport.from_sections(
        findings=report.findings,
        impression=report.impression,
        indication=report.indication,
        comparison=report.comparison,
        technique=report.technique,
    )
