"""Check a report's text (and optional header facts) without storing anything."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import Requester, SettingsDep
from app.api.errors import ErrorBody
from app.api.schemas import AI_NOTICE, CheckReportIn, FlagFields, SuggestionOut
from app.services.report_check import check_report_text
from medvlm.checking import Checker
from medvlm.taxonomy import ComplexClass

router = APIRouter(tags=["checks"])


class CheckedFlagOut(FlagFields):
    """One flag of a report checked without storing it (``medvlm.checking.Flag.to_dict()``):
    unverified AI output; ``start``/``end`` index the text of ``section``."""

    key: str = Field(description="De-duplication key: subtype|section|sentence|concept.")
    start: int | None
    end: int | None
    concept: str | None
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: dict[str, Any]
    suggestions: list[SuggestionOut] = Field(
        default_factory=list,
        description="Suggested corrections (unverified AI output, never applied to the report).",
    )


class CheckReportOut(BaseModel):
    """The checker's result (``medvlm.checking.CheckResult.to_dict()``) plus the AI notice."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    flags: list[CheckedFlagOut]
    verdict_simple: Literal["Y", "N"] = Field(examples=["Y"])
    verdict_complex: ComplexClass = Field(examples=["substitute"])
    unparseable_answers: int
    model_answers: list[dict[str, Any]] = Field(description="Raw model answers (unverified).")
    provenance: dict[str, Any]
    timings_ms: dict[str, float]
    grounding: dict[str, Any]
    groundings: list[dict[str, Any]]
    disclaimer: str
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
