"""Check a report's text (and optional header facts) without storing anything.

The service behind ``POST /api/v1/check-report``: the report rules of every door
(:func:`app.services.reports.parse_report_input`, with the size limit), the header facts as the
pipeline and CLI read them, and the check under the time budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from app.services.headers import checker_facts
from app.services.reports import parse_report_input
from medvlm.checking import Checker, CheckResult
from medvlm.reports import ReportInput

__all__ = ["check_report_text"]


def check_report_text(
    checker: Checker,
    report: ReportInput,
    header: Mapping[str, Any] | None,
    *,
    max_chars: int,
    time_budget_s: float,
) -> CheckResult:
    """The checker's result; ``InvalidInputError`` / ``ReportTooLargeError`` for a bad report,
    ``CheckTimeBudgetError`` past ``time_budget_s``."""
    parsed = parse_report_input(report, max_chars=max_chars)
    facts = checker_facts(header) if header is not None else None
    return checker.check(parsed, header=facts, deadline=time.monotonic() + time_budget_s)
