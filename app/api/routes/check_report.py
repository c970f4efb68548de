"""Check a report's text (and optional header facts) without storing anything."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Requester, SettingsDep
from app.api.errors import ErrorBody
from app.api.schemas import AI_NOTICE, CheckReportIn
from app.services.errors import InvalidInputError
from app.services.reports import check_report_size
from medvlm.checking import Checker, HeaderFacts
from medvlm.reports import ParsedReport, parse_report

router = APIRouter(tags=["checks"])


class CheckReportOut(BaseModel):
    """The checker's result (``medvlm.checking.CheckResult.to_dict()``) plus the AI notice."""

    model_config = ConfigDict(extra="allow")

    flags: list[dict[str, Any]]
    verdict_simple: str = Field(examples=["Y"])
    verdict_complex: str = Field(examples=["substitute"])
    notice: str = AI_NOTICE


@router.post(
    "/check-report",
    response_model=CheckReportOut,
    summary="Check report text against itself and optional header facts (nothing is stored)",
    responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
def check_report(
    request: Request, body: CheckReportIn, principal: Requester, settings: SettingsDep
) -> CheckReportOut:
    checker: Checker = request.app.state.text_checker
    limits = settings.checks
    check_report_size(
        [
            body.text,
            body.findings,
            body.impression,
            body.indication,
            body.comparison,
            body.technique,
        ],
        max_chars=limits.max_report_chars,
    )
    has_sections = any((v or "").strip() for v in (body.findings, body.impression))
    if body.text is not None and has_sections:
        raise InvalidInputError("Give either 'text' or 'findings'/'impression', not both.")
    if body.text is not None and body.text.strip():
        parsed = parse_report(body.text)
    elif has_sections:
        parsed = ParsedReport.from_sections(
            findings=body.findings,
            impression=body.impression,
            indication=body.indication,
            comparison=body.comparison,
            technique=body.technique,
        )
    else:
        raise InvalidInputError("Send the report as 'text' or as 'findings' and/or 'impression'.")
    header = HeaderFacts.from_dict(body.header.model_dump()) if body.header else None
    result = checker.check(parsed, header=header, deadline=time.monotonic() + limits.time_budget_s)
    return CheckReportOut(**{**result.to_dict(), "notice": AI_NOTICE})
