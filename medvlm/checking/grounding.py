"""Grounding in the check: boxes for flagged and reported findings, attached as evidence.

Two sources of boxes:

* ``relevance`` (any runtime with a ``relevance`` method, i.e. the local LLaVA-Rad runtime): the
  knowledge-decomposed verification question of the finding is asked *without* its side (a map
  conditioned on the word "left" would partly read the text, and the side check below would be
  circular), its relevance map is laid back on the film and thresholded into boxes;
* ``model`` (a backend that declares box support): the ``LOCALISE_FINDING`` answer, a box in
  fractions of the film (see :mod:`medvlm.checking.model_checks`).

A box whose side contradicts the reported side is a laterality flag (``model.ground.side``). Every
attempt, including a skipped or failed one, is recorded with its outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from medvlm.checking.evidence import Item, make_flag
from medvlm.checking.types import CheckerConfig, Flag, ModelAnswer
from medvlm.errors import MedVLMError
from medvlm.grounding import (
    FilmBox,
    FilmMap,
    Relevance,
    SideReading,
    box_side,
    map_to_boxes,
)
from medvlm.prompts.checking import VERIFY_FINDING, render_verify
from medvlm.prompts.knowledge import Category, Finding, KnowledgeBase
from medvlm.reports import Side
from medvlm.taxonomy import ErrorSubtype, FlagSource

__all__ = [
    "FilmContext",
    "Grounding",
    "GroundingStatus",
    "RelevanceRuntime",
    "attach_grounding",
    "ground_findings",
]

logger = logging.getLogger(__name__)

GroundingStatus = Literal["ok", "no_box", "failed"]
GROUNDING_RULE_VERSION = "1"


@runtime_checkable
class RelevanceRuntime(Protocol):
    """A runtime that can say where in the image its answer comes from."""

    def relevance(
        self, image: NDArray[np.uint8], instruction: str, *, method: str = ...
    ) -> Any: ...


@dataclass(frozen=True)
class FilmContext:
    """What the film's header says about its orientation (for the side of a box)."""

    patient_orientation: tuple[str, ...] | None = None
    view_position: str | None = None

    @classmethod
    def from_header(cls, orientation: object, view_position: object) -> FilmContext:
        """From DICOM values: PatientOrientation as a list or a backslash-separated string."""
        values: tuple[str, ...] | None = None
        if isinstance(orientation, str) and orientation.strip():
            values = tuple(v.strip() for v in orientation.split("\\"))
        elif isinstance(orientation, (list, tuple)) and orientation:
            values = tuple(str(v).strip() for v in orientation)
        view = str(view_position).strip() if isinstance(view_position, str) else None
        return cls(values, view or None)


@dataclass(frozen=True)
class Grounding:
    """One grounding attempt for one finding: its boxes, the map behind them, and its outcome."""

    index: int
    target: str
    label: str
    source: Literal["relevance", "model"]
    method: str
    status: GroundingStatus
    question: str
    prompt_id: str
    prompt_version: str
    boxes: tuple[FilmBox, ...] = ()
    statistics: dict[str, Any] = field(default_factory=dict)
    side: SideReading | None = None
    error: str | None = None
    film_size: tuple[int, int] | None = None
    film_map: FilmMap | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def box_evidence(self) -> list[dict[str, Any]]:
        """The boxes as flag evidence: original film pixels ``[x0, y0, x1, y1]`` with a label."""
        return [
            {
                **b.to_dict(),
                "source": self.source,
                "method": self.method,
                "grounding_index": self.index,
                "ai_generated": True,
            }
            for b in self.boxes
        ]

    def evidence(self) -> dict[str, Any]:
        """A short record for a flag or an answer (the full one is :meth:`to_dict`)."""
        return {
            "grounding_index": self.index,
            "source": self.source,
            "method": self.method,
            "status": self.status,
            "question": self.question,
            "map_statistics": self.statistics,
            "side": None if self.side is None else self.side.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "target": self.target,
            "label": self.label,
            "source": self.source,
            "method": self.method,
            "status": self.status,
            "question": self.question,
            "prompt_id": self.prompt_id,
            "prompt_version": self.prompt_version,
            "boxes": [b.to_dict() for b in self.boxes],
            "statistics": self.statistics,
            "side": None if self.side is None else self.side.to_dict(),
            "error": self.error,
            "film_size": None if self.film_size is None else list(self.film_size),
            "has_map": self.film_map is not None,
            "timings_ms": self.timings_ms,
            "ai_generated": True,
        }


def _targets(
    kb: KnowledgeBase, items: Sequence[Item], flags: Sequence[Flag]
) -> list[tuple[Finding, frozenset[str]]]:
    """Findings to ground, most useful first: those model flags concern, then sided reported
    findings (a box can contradict their side), then other reported findings."""
    ranked: list[tuple[int, Finding, frozenset[str]]] = []
    flagged = [f.concept for f in flags if f.source is FlagSource.MODEL and f.concept]
    for concept in dict.fromkeys(flagged):
        if concept not in kb:
            continue
        item = next((i for i in items if i.mention.concept == concept), None)
        ranked.append((0, kb[concept], item.mention.zones if item else frozenset()))
    for item in items:
        if not item.asserted:
            continue
        sided = item.mention.laterality in (Side.LEFT, Side.RIGHT)
        ranked.append((1 if sided else 2, kb[item.mention.concept], item.mention.zones))
    ranked.sort(key=lambda r: r[0])
    out: list[tuple[Finding, frozenset[str]]] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    for _, entry, zones in ranked:
        if entry.category is Category.GENERIC or (entry.id, zones) in seen:
            continue
        seen.add((entry.id, zones))
        out.append((entry, zones))
    return out


def ground_findings(
    runtime: RelevanceRuntime,
    kb: KnowledgeBase,
    image: NDArray[np.uint8],
    items: Sequence[Item],
    flags: Sequence[Flag],
    config: CheckerConfig,
    film: FilmContext,
    *,
    start_index: int = 0,
) -> list[Grounding]:
    """Relevance maps and boxes for at most ``config.max_grounding_calls`` findings."""
    height, width = int(image.shape[0]), int(image.shape[1])
    out: list[Grounding] = []
    for entry, zones in _targets(kb, items, flags)[: config.max_grounding_calls]:
        question = render_verify(entry, None, zones)
        base = {
            "index": start_index + len(out),
            "target": entry.id,
            "label": entry.name,
            "source": "relevance",
            "method": config.grounding_method,
            "question": question,
            "prompt_id": VERIFY_FINDING.id,
            "prompt_version": VERIFY_FINDING.version,
            "film_size": (width, height),
        }
        t0 = time.perf_counter()
        try:
            relevance: Relevance = runtime.relevance(
                image, question, method=config.grounding_method
            )
            boxes, stats = map_to_boxes(
                relevance.film_map, label=entry.name, threshold=config.grounding_threshold
            )
        except (MedVLMError, RuntimeError) as exc:
            # RuntimeError: torch's own failures (e.g. out of memory in the backward pass).
            logger.warning("grounding of %s failed: %s", entry.id, type(exc).__name__)
            out.append(
                Grounding(
                    **base,  # type: ignore[arg-type]
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                    timings_ms={"relevance_ms": (time.perf_counter() - t0) * 1000.0},
                )
            )
            continue
        stats = {**stats, "answer_margin": round(relevance.score, 6), **_part_stats(relevance)}
        side = (
            box_side(
                boxes[0].box,
                width,
                patient_orientation=film.patient_orientation,
                view_position=film.view_position,
            )
            if boxes
            else None
        )
        out.append(
            Grounding(
                **base,  # type: ignore[arg-type]
                status="ok" if boxes else "no_box",
                boxes=tuple(boxes),
                statistics=stats,
                side=side,
                film_map=relevance.film_map,
                timings_ms=dict(relevance.timings_ms),
            )
        )
    return out


def _part_stats(relevance: Relevance) -> dict[str, Any]:
    details = relevance.details
    keep: dict[str, Any] = {
        k: details[k] for k in ("visual_tokens", "forward_passes", "grid") if k in details
    }
    if "parts" in details:
        keep["parts"] = details["parts"]
    return keep


def side_flags(
    groundings: Sequence[Grounding],
    kb: KnowledgeBase,
    items: Sequence[Item],
    config: CheckerConfig,
    *,
    rule_id: str = "model.ground.side",
    rule_version: str = GROUNDING_RULE_VERSION,
) -> list[Flag]:
    """A laterality flag for each sided reported finding whose box lies on the other side."""
    by_target = {g.target: g for g in groundings if g.status == "ok" and g.side is not None}
    out: list[Flag] = []
    seen: set[tuple[str, Side]] = set()
    for item in items:
        side = item.mention.laterality
        if not item.asserted or side not in (Side.LEFT, Side.RIGHT):
            continue
        grounding = by_target.get(item.mention.concept)
        if grounding is None or grounding.side is None or grounding.side.side is None:
            continue
        if grounding.side.side == side.value or (item.mention.concept, side) in seen:
            continue
        seen.add((item.mention.concept, side))
        entry = kb[item.mention.concept]
        how = (
            "the relevance map of the model's answer"
            if grounding.source == "relevance"
            else "the model's box"
        )
        out.append(
            make_flag(
                subtype=ErrorSubtype.LATERALITY,
                rule_id=rule_id,
                rule_version=rule_version,
                source=FlagSource.MODEL,
                confidence=config.model_flag_confidence,
                item=item,
                message=(
                    f"{how[0].upper()}{how[1:]} places {entry.name} on the patient's "
                    f"{grounding.side.side} side of the film; {item.where()} says {side.value}."
                ),
                extra={
                    "prompt_id": grounding.prompt_id,
                    "prompt_version": grounding.prompt_version,
                    "question": grounding.question,
                    "boxes": grounding.box_evidence(),
                    "grounding": grounding.evidence(),
                    "ai_generated": True,
                },
            )
        )
    return out


def attach_grounding(
    flags: list[Flag], answers: list[ModelAnswer], groundings: Sequence[Grounding]
) -> tuple[list[Flag], list[ModelAnswer]]:
    """Model flags and verification answers about a grounded finding get its boxes as evidence."""
    by_target: dict[str, Grounding] = {}
    for g in groundings:
        by_target.setdefault(g.target, g)
    new_flags = []
    for flag in flags:
        found = by_target.get(flag.concept or "")
        if found is None or flag.source is not FlagSource.MODEL or "grounding" in flag.evidence:
            new_flags.append(flag)
            continue
        evidence = {**flag.evidence, "boxes": found.box_evidence(), "grounding": found.evidence()}
        new_flags.append(dataclasses.replace(flag, evidence=evidence))
    new_answers = []
    for answer in answers:
        hit = by_target.get(answer.target or "")
        if hit is None or answer.prompt_id != VERIFY_FINDING.id:
            new_answers.append(answer)
            continue
        evidence = {**answer.evidence, "boxes": hit.box_evidence(), "grounding": hit.evidence()}
        new_answers.append(dataclasses.replace(answer, evidence=evidence))
    return new_flags, new_answers
