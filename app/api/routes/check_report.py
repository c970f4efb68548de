"""Check a report's text (and optional header facts) without storing anything."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Requester, SettingsDep
from app.api.errors import ErrorBody
from app.api.schemas import AI_NOTICE, CheckReportIn
from app.services.report_check import check_report_text
from medvlm.checking import Checker

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
    result = check_report_text(
        checker,
        body.report_input(),
        body.header.model_dump() if body.header else None,
        max_chars=settings.checks.max_report_chars,
        time_budget_s=settings.checks.time_budget_s,
    )
    return CheckReportOut(**{**result.to_dict(), "notice": AI_NOTICE})
