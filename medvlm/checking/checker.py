"""The :class:`Checker`: text and header rules, model checks when a runtime is given, fusion."""

from __future__ import annotations

import time
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from medvlm.checking.fusion import FUSION_VERSION, apply_severity_policy, merge_flags, verdicts
from medvlm.checking.grounding import FilmContext
from medvlm.checking.header_rules import HEADER_RULESET_VERSION, HeaderRules
from medvlm.checking.model_checks import ModelCheckOutcome, ModelChecks
from medvlm.checking.text_rules import TEXT_RULESET_VERSION, TextRules, items_of
from medvlm.checking.types import (
    CheckerConfig,
    CheckerInputError,
    CheckResult,
    CheckTimeBudgetError,
    Flag,
    HeaderFacts,
)
from medvlm.prompts.checking import PROMPTS
from medvlm.prompts.knowledge import KnowledgeBase, load_knowledge_base
from medvlm.reports import ParsedReport, ReportParser, SectionName
from medvlm.runtime.base import VisionLanguageRuntime

__all__ = ["RULESET_VERSION", "Checker"]

RULESET_VERSION = (
    f"text-{TEXT_RULESET_VERSION}+header-{HEADER_RULESET_VERSION}+fusion-{FUSION_VERSION}"
)


class Checker:
    """Checks parsed reports. Build once (loads and validates the knowledge base) and reuse.

    ``check`` keeps no state between calls and the rule objects are immutable, so one Checker may be
    shared by threads for text and header checks. Model checks are only as thread-safe as the
    runtime, and the transformers runtime has no lock of its own: RadCheck calls it from one worker
    thread at a time, or behind ``radcheck model serve``, whose server serialises generation.
    """

    def __init__(
        self,
        runtime: VisionLanguageRuntime | None = None,
        config: CheckerConfig | None = None,
        *,
        kb: KnowledgeBase | None = None,
    ) -> None:
        self._config = config if config is not None else CheckerConfig()
        self._kb = kb if kb is not None else load_knowledge_base(self._config.kb_path)
        self._parser = ReportParser(self._kb)
        self._runtime = runtime
        self._text = TextRules(self._kb)
        self._header = HeaderRules(self._kb)
        self._model = ModelChecks(self._kb, self._parser, self._config)
        self._static_provenance: dict[str, Any] = {
            "ruleset_version": RULESET_VERSION,
            "kb_version": self._kb.version,
            "kb_file": self._kb.source_file,
            "prompts": {p.id: p.version for p in PROMPTS.values()},
            "config": self._config.to_dict(),
        }

    @property
    def kb(self) -> KnowledgeBase:
        return self._kb

    @property
    def parser(self) -> ReportParser:
        return self._parser

    @property
    def config(self) -> CheckerConfig:
        return self._config

    def parse(self, text: str) -> ParsedReport:
        """Parse raw report text with this checker's knowledge base."""
        return self._parser.parse(text)

    def check(
        self,
        report: ParsedReport,
        header: HeaderFacts | None = None,
        image: NDArray[np.uint8] | None = None,
        *,
        film: FilmContext | None = None,
        deadline: float | None = None,
    ) -> CheckResult:
        """Run every enabled check on one report and fuse the flags.

        ``film`` (PatientOrientation, view) tells grounding which side of the film is the
        patient's right; without it the usual frontal display is assumed and recorded.
        ``deadline`` (a ``time.monotonic()`` value) is the check's time budget: past it, the
        check stops at the next stage boundary or model call with :class:`CheckTimeBudgetError`.
        """
        t_start = time.perf_counter()
        budget = _Budget(deadline, time.monotonic())
        if not isinstance(report, ParsedReport):
            raise CheckerInputError(
                f"report must be a ParsedReport, got {type(report).__name__}; "
                "call medvlm.reports.parse_report(text) or ParsedReport.from_sections(...)"
            )
        if image is not None:
            _check_image(image)
        if report.kb_version != self._kb.version:
            report = self._parser.parse_sections(
                {name: section.text for name, section in report.sections.items()}
            )
        timings: dict[str, float] = {}
        flags: list[Flag] = []
        t = time.perf_counter()
        budget.check("parsing")
        if self._config.text_checks:
            flags.extend(self._text.run(report))
        timings["text_ms"] = (time.perf_counter() - t) * 1000.0
        budget.check("text rules")
        t = time.perf_counter()
        if self._config.header_checks and header is not None:
            flags.extend(self._header.run(report, header))
        timings["header_ms"] = (time.perf_counter() - t) * 1000.0
        budget.check("header rules")
        outcome = ModelCheckOutcome()
        provenance = dict(self._static_provenance)
        if self._runtime is not None and self._config.model_checks:
            t = time.perf_counter()
            if film is None and header is not None:
                film = FilmContext(view_position=header.view_position)
            runtime = self._runtime if deadline is None else _BudgetedRuntime(self._runtime, budget)
            outcome = self._model.run(
                cast(VisionLanguageRuntime, runtime), report, image, items_of(report), film
            )
            budget.check("model checks")
            flags.extend(outcome.flags)
            timings["model_ms"] = (time.perf_counter() - t) * 1000.0
            provenance["runtime"] = dict(self._runtime.provenance())
            provenance["model_id"] = self._runtime.model_id
        fused = merge_flags(apply_severity_policy(f, self._kb) for f in flags)
        simple, complex_class, reason = verdicts(
            fused,
            self._config.verdict_threshold,
            outcome.simple,
            outcome.complex,
            self._config.use_model_verdict,
        )
        grounding = dict(outcome.grounding) or {
            "status": "skipped",
            "reason": "no model backend: grounding needs a model"
            if self._runtime is None
            else "model checks are off",
        }
        provenance["verdict_reason"] = reason
        provenance["sections"] = [name.value for name in report.sections]
        if SectionName.FINDINGS not in report.sections:
            provenance["note"] = (
                "no FINDINGS section: model error-check prompts used the impression"
            )
        timings["total_ms"] = (time.perf_counter() - t_start) * 1000.0
        return CheckResult(
            flags=tuple(fused),
            verdict_simple=simple,
            verdict_complex=complex_class,
            unparseable_answers=outcome.unparseable,
            model_answers=tuple(outcome.answers),
            provenance=provenance,
            timings_ms=timings,
            groundings=tuple(outcome.groundings),
            grounding=grounding,
        )


class _Budget:
    """A check's deadline; ``check`` raises once it has passed."""

    def __init__(self, deadline: float | None, started: float) -> None:
        self.deadline = deadline
        self.started = started

    def check(self, stage: str) -> None:
        if self.deadline is None:
            return
        now = time.monotonic()
        if now > self.deadline:
            raise CheckTimeBudgetError(
                f"The check ran past its time budget of {self.deadline - self.started:.1f} s "
                f"(stopped after {stage}, {now - self.started:.1f} s in); nothing was stored. A "
                "very long report or a slow model backend: shorten the report, check the model "
                "server, or raise RADCHECK_CHECKS__TIME_BUDGET_S."
            )


class _BudgetedRuntime:
    """The runtime, refusing to start another model call once the budget is spent."""

    def __init__(self, runtime: VisionLanguageRuntime, budget: _Budget) -> None:
        self._runtime = runtime
        self._budget = budget

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self._budget.check("a model call")
        return self._runtime.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise CheckerInputError(
            f"image must be a 2-D uint8 array (the display image), got shape {shape} dtype {dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CheckerInputError(f"image has an empty shape {image.shape}")
