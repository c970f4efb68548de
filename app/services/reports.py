"""Report intake: every submission is a new version; earlier versions are kept."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Report, Study
from app.services import audit
from app.services.errors import InvalidInputError, NotFoundError, ReportTooLargeError
from medvlm.reports import ParsedReport, parse_report

__all__ = [
    "DEFAULT_MAX_REPORT_CHARS",
    "ReportSections",
    "ReportSubmission",
    "check_report_size",
    "parsed_from_row",
    "submit_report",
    "validate_submission",
]


# RADCHECK_CHECKS__MAX_REPORT_CHARS's default: a chest X-ray report is rarely above 3,000 characters.
DEFAULT_MAX_REPORT_CHARS = 20_000
MAX_REPORT_SETTING = "RADCHECK_CHECKS__MAX_REPORT_CHARS"


@dataclass(frozen=True)
class ReportSubmission:
    """Either the sections, or the raw report text (which is split into sections)."""

    findings: str | None = None
    impression: str | None = None
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    text: str | None = None
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
    for key, section in parsed.sections.items():
        if str(key) == name and section.text.strip():
            return section.text
    return None


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


def validate_submission(
    submission: ReportSubmission, *, max_chars: int = DEFAULT_MAX_REPORT_CHARS
) -> ReportSections:
    """The report's sections, or ``InvalidInputError`` naming what is wrong and how to fix it.

    The one set of rules for every report door (the JSON API, HL7 ORU^R01, file import); a report
    longer than ``max_chars`` raises ``ReportTooLargeError`` (an ``InvalidInputError`` too).
    """
    check_report_size(
        [
            submission.text,
            submission.findings,
            submission.impression,
            submission.indication,
            submission.comparison,
            submission.technique,
        ],
        max_chars=max_chars,
    )
    has_sections = any((v or "").strip() for v in (submission.findings, submission.impression))
    if submission.text is not None and has_sections:
        raise InvalidInputError(
            "Give either 'text' (the raw report) or the sections 'findings'/'impression', not both."
        )
    if submission.text is not None:
        if not submission.text.strip():
            raise InvalidInputError("'text' is empty: send the report text or its sections.")
        parsed = parse_report(submission.text)
        findings = _section_text(parsed, "findings")
        impression = _section_text(parsed, "impression")
        if findings is None and impression is None:
            raise InvalidInputError(
                "No FINDINGS or IMPRESSION section found in 'text': label the sections "
                "(e.g. 'FINDINGS: ... IMPRESSION: ...') or send them as separate fields."
            )
        indication = _section_text(parsed, "indication")
        comparison = _section_text(parsed, "comparison")
        technique = _section_text(parsed, "technique")
    elif has_sections:
        findings, impression = submission.findings, submission.impression
        indication, comparison = submission.indication, submission.comparison
        technique = submission.technique
    else:
        raise InvalidInputError(
            "The report has neither 'findings' nor 'impression' nor 'text': send at least one."
        )
    return ReportSections(findings, impression, indication, comparison, technique)


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
