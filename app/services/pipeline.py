"""The checking pipeline of one study: select the image, render it, run every available check.

This is the one path every check takes (API, worker, demo). It holds no database session: the worker
loads a ``JobInputs`` snapshot, runs the pipeline (possibly for seconds on a GPU), then writes the
``PipelineResult`` back under its lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dicom_io
from app.services.errors import CheckIncompleteError, LeaseLostError
from app.services.headers import checker_facts_from_dicom
from medvlm.checking import Checker, FilmContext, Flag, Grounding, HeaderFacts
from medvlm.reports import ParsedReport
from medvlm.runtime.base import VisionLanguageRuntime

__all__ = ["CandidateImage", "CheckPipeline", "JobInputs", "PipelineResult"]

logger = logging.getLogger(__name__)

PIPELINE_VERSION = "1"


@dataclass(frozen=True)
class CandidateImage:
    """One stored instance of the study, as the database knows it."""

    sop_instance_uid: str
    series_instance_uid: str
    kind: str
    attributes: dict[str, Any]
    header: dict[str, Any]
    eligible: bool
    reasons: tuple[str, ...]
    path: Path


@dataclass(frozen=True)
class JobInputs:
    job_id: int
    report: ParsedReport
    candidates: tuple[CandidateImage, ...]


@dataclass
class PipelineResult:
    flags: list[Flag]
    verdict_simple: str
    verdict_complex: str
    selection: dict[str, Any]
    provenance: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    groundings: list[Grounding] = field(default_factory=list)


def header_facts_for_checker(header: dict[str, Any]) -> HeaderFacts:
    """dicom_io's header facts (stored as JSON) mapped onto the checker's input
    (:data:`app.services.headers.CHECKER_FIELD_OF_DICOM`)."""
    return checker_facts_from_dicom(header)


class CheckPipeline:
    """Built once per worker (the checker and model are heavy); ``run`` is called per job."""

    def __init__(
        self,
        *,
        checker: Checker,
        runtime: VisionLanguageRuntime | None,
        selection_rules: dicom_io.SelectionRules | None = None,
        time_budget_s: float | None = None,
    ) -> None:
        self.checker = checker
        self.runtime = runtime
        self.selection_rules = selection_rules
        self.time_budget_s = time_budget_s

    @staticmethod
    def _stop_if(should_stop: Callable[[], bool], inputs: JobInputs, stage: str) -> None:
        if should_stop():
            raise LeaseLostError(
                f"check job {inputs.job_id}: lease lost before the {stage} stage; "
                "another worker owns the job now"
            )

    def run(
        self, inputs: JobInputs, should_stop: Callable[[], bool] = lambda: False
    ) -> PipelineResult:
        """Run every stage; ``should_stop`` is asked between stages (e.g. the job's lease was lost,
        so another worker owns it now) and stops the run with ``LeaseLostError``."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        # The job's time budget (RADCHECK_CHECKS__TIME_BUDGET_S) covers render and check.
        deadline = None if self.time_budget_s is None else time.monotonic() + self.time_budget_s
        decision = dicom_io.select_image(
            [
                dicom_io.SelectionCandidate(
                    sop_instance_uid=c.sop_instance_uid,
                    series_instance_uid=c.series_instance_uid,
                    kind=dicom_io.InstanceKind(c.kind),
                    attributes=c.attributes,
                    eligibility=dicom_io.Eligibility(eligible=c.eligible, reasons=c.reasons),
                )
                for c in inputs.candidates
            ],
            self.selection_rules,
        )
        timings["select"] = (time.perf_counter() - t0) * 1000
        chosen = next((c for c in inputs.candidates if c.sop_instance_uid == decision.chosen), None)
        header = header_facts_for_checker(chosen.header) if chosen is not None else None
        image = None
        render_info: dict[str, Any] = {}
        self._stop_if(should_stop, inputs, "render")
        if chosen is not None and self.runtime is not None:
            t0 = time.perf_counter()
            rendered = dicom_io.render(chosen.path)
            image = rendered.display
            render_info = {"steps": list(rendered.steps), "warnings": list(rendered.warnings)}
            timings["render"] = (time.perf_counter() - t0) * 1000
        self._stop_if(should_stop, inputs, "check")
        t0 = time.perf_counter()
        film = (
            FilmContext.from_header(
                chosen.attributes.get("PatientOrientation"),
                chosen.attributes.get("ViewPosition") or (header.view_position if header else None),
            )
            if chosen is not None
            else None
        )
        result = self.checker.check(
            inputs.report, header=header, image=image, film=film, deadline=deadline
        )
        timings["check"] = (time.perf_counter() - t0) * 1000
        failed = [answer.error for answer in result.model_answers if answer.error]
        if failed:
            # A check that silently skipped the model would look complete: fail it, keep the
            # error, and let the integration retry once the model is back.
            raise CheckIncompleteError(
                f"{len(failed)} of {len(result.model_answers)} model calls failed, first: "
                f"{failed[0]}. The model backend is unavailable or misconfigured "
                f"(RADCHECK_MODEL__*); retry the check with POST /api/v1/checks/{inputs.job_id}/retry."
            )
        for stage, ms in result.timings_ms.items():
            timings[f"check.{stage}"] = ms
        provenance: dict[str, Any] = {
            "pipeline_version": PIPELINE_VERSION,
            "checker": result.provenance,
            "image": {"sop_instance_uid": decision.chosen, **render_info},
            "model_output": "unverified AI output: must be reviewed by a radiologist",
            "model_answers": [answer.to_dict() for answer in result.model_answers],
            "unparseable_answers": result.unparseable_answers,
            "grounding": dict(result.grounding),
        }
        if self.runtime is None:
            provenance["model"] = {"backend": "none"}
            provenance["grounding"] = {
                "status": "skipped",
                "reason": "no model backend (RADCHECK_MODEL__BACKEND=none): no boxes are drawn",
            }
        elif chosen is None and result.grounding.get("status") == "skipped":
            provenance["grounding"] = {
                **result.grounding,
                "reason": "no usable image in the study (see selection): nothing to ground findings in",
            }
        return PipelineResult(
            flags=list(result.flags),
            verdict_simple=str(result.verdict_simple),
            verdict_complex=str(result.verdict_complex),
            selection=decision.to_dict(),
            provenance=provenance,
            timings_ms=timings,
            groundings=list(result.groundings),
        )
