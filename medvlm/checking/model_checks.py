"""Model checks through any :class:`VisionLanguageRuntime`: error-check prompts, generate-and-compare,
knowledge-decomposed verification and localisation. Answers are parsed strictly; an answer that does
not parse is recorded (``ModelAnswer.parsed is None``) and never turned into a flag or a verdict."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from medvlm.checking.evidence import Item, make_flag
from medvlm.checking.grounding import (
    FilmContext,
    Grounding,
    RelevanceRuntime,
    attach_grounding,
    ground_findings,
    side_flags,
)
from medvlm.checking.types import CheckerConfig, Flag, ModelAnswer
from medvlm.errors import MedVLMError
from medvlm.grounding import FilmBox, box_side
from medvlm.prompts.checking import (
    COMPLEX_CHOICES,
    COMPLEX_ERROR_CHECK,
    LOCALISE_FINDING,
    SIMPLE_CHOICES,
    SIMPLE_ERROR_CHECK,
    VERIFY_FINDING,
    Box,
    PromptTemplate,
    parse_box_answer,
    parse_choice_answer,
    parse_yes_no_answer,
    render_complex,
    render_generate,
    render_localise,
    render_simple,
    render_verify,
)
from medvlm.prompts.knowledge import Category, KnowledgeBase
from medvlm.reports import Mention, ParsedReport, Presence, ReportParser, SectionName, Side
from medvlm.reports.vocabulary import OTHERWISE
from medvlm.runtime.base import VisionLanguageRuntime
from medvlm.taxonomy import ErrorSubtype, FlagSource

__all__ = ["ModelCheckOutcome", "ModelChecks"]

logger = logging.getLogger(__name__)


@dataclass
class ModelCheckOutcome:
    """What the model checks produced for one report (mutable accumulator, one per check call)."""

    flags: list[Flag] = field(default_factory=list)
    answers: list[ModelAnswer] = field(default_factory=list)
    simple: str | None = None
    complex: str | None = None
    groundings: list[Grounding] = field(default_factory=list)
    grounding: dict[str, object] = field(default_factory=dict)

    @property
    def unparseable(self) -> int:
        return sum(1 for a in self.answers if a.error is None and a.parsed is None)


def _yes_no(text: str) -> str | None:
    value = parse_yes_no_answer(text)
    return None if value is None else ("yes" if value else "no")


@dataclass(frozen=True)
class _PresenceConflict:
    """The model's own findings contradict whether a reported finding is there: ``evidence``
    returns the generated mention that does (from the generated mentions of the same concept that
    assert it, and those that deny it or a broader finding), or ``None``."""

    what: str
    subtype: ErrorSubtype
    evidence: Callable[[Item, list[Item], list[Item]], Item | None]
    message: Callable[[str, Item, Item], str]


@dataclass(frozen=True)
class _AttributeConflict:
    """The model agrees a finding is there but describes it differently (a side, a grade)."""

    what: str
    subtype: ErrorSubtype
    differs: Callable[[Mention, Mention], bool]
    message: Callable[[str, Item, Item], str]


_PRESENCE: tuple[_PresenceConflict, ...] = (
    _PresenceConflict(
        "false",
        ErrorSubtype.INSERT_FINDING,
        lambda item, present, denies: (
            denies[0] if item.asserted and denies and not present else None
        ),
        lambda name, item, g: (
            f"The model's own findings deny {name} ('{g.sentence.text}'), which {item.where()} "
            "reports."
        ),
    ),
    _PresenceConflict(
        "denied",
        ErrorSubtype.NEGATION,
        lambda item, present, denies: present[0] if item.denied and present else None,
        lambda name, item, g: (
            f"The model's own findings report {name} ('{g.sentence.text}'), which {item.where()} "
            "denies."
        ),
    ),
)
"""Tried in order; the first that holds is the flag."""

_ATTRIBUTES: tuple[_AttributeConflict, ...] = (
    _AttributeConflict(
        "side",
        ErrorSubtype.LATERALITY,
        lambda r, g: (
            r.laterality is not None
            and g.laterality is not None
            and not r.laterality.compatible(g.laterality)
        ),
        lambda name, item, g: (
            f"The model places {name} on the {g.mention.laterality} ('{g.sentence.text}'); "
            f"{item.where()} says {item.mention.laterality}."
        ),
    ),
    _AttributeConflict(
        "severity",
        ErrorSubtype.SEVERITY,
        lambda r, g: bool(r.grades and g.grades and not r.grades & g.grades),
        lambda name, item, g: (
            f"The model grades {name} as '{g.mention.severity}' ('{g.sentence.text}'); "
            f"{item.where()} says '{item.mention.severity}'."
        ),
    ),
)
"""Compared when both the report and the model assert the finding; each that differs flags."""


class ModelChecks:
    """Runs the model checks of one report; holds only immutable configuration."""

    def __init__(self, kb: KnowledgeBase, parser: ReportParser, config: CheckerConfig) -> None:
        self._kb = kb
        self._parser = parser
        self._config = config

    def run(
        self,
        runtime: VisionLanguageRuntime,
        report: ParsedReport,
        image: NDArray[np.uint8] | None,
        items: list[Item],
        film: FilmContext | None = None,
    ) -> ModelCheckOutcome:
        out = ModelCheckOutcome()
        cfg = self._config
        film = film if film is not None else FilmContext()
        findings = report.text_of(SectionName.FINDINGS) or report.text_of(SectionName.IMPRESSION)
        if findings and cfg.simple_prompt:
            answer = self._ask(
                runtime,
                image,
                SIMPLE_ERROR_CHECK,
                render_simple(findings),
                None,
                lambda t: parse_choice_answer(t, SIMPLE_CHOICES),
                8,
            )
            out.answers.append(answer)
            out.simple = answer.parsed
        if findings and cfg.complex_prompt:
            answer = self._ask(
                runtime,
                image,
                COMPLEX_ERROR_CHECK,
                render_complex(findings),
                None,
                lambda t: parse_choice_answer(t, COMPLEX_CHOICES),
                8,
            )
            out.answers.append(answer)
            out.complex = None if answer.parsed is None else COMPLEX_CHOICES[answer.parsed]
        if image is not None and cfg.generate_and_compare:
            self._generate_and_compare(runtime, report, image, items, out)
        if cfg.verify_findings and cfg.max_verify_prompts > 0:
            self._verify(runtime, image, items, out)
        if image is not None and cfg.localise_findings and runtime.supports_boxes:
            self._localise(runtime, image, items, out, film)
        self._ground(runtime, image, items, out, film)
        return out

    def _ground(
        self,
        runtime: VisionLanguageRuntime,
        image: NDArray[np.uint8] | None,
        items: list[Item],
        out: ModelCheckOutcome,
        film: FilmContext,
    ) -> None:
        """Relevance-map boxes (bounded), side flags, boxes attached to flags and answers."""
        cfg = self._config
        relevance = isinstance(runtime, RelevanceRuntime)
        summary: dict[str, object] = {
            "method": cfg.grounding_method if relevance else None,
            "max_grounding_calls": cfg.max_grounding_calls,
            "box_native": bool(runtime.supports_boxes and cfg.localise_findings),
        }
        reason: str | None = None
        if not cfg.grounding or cfg.max_grounding_calls == 0:
            reason = "grounding is off (max_grounding_calls 0)"
        elif image is None:
            reason = "no usable image: nothing to ground findings in"
        elif not relevance:
            reason = (
                f"the model backend ({runtime.model_id}) computes no relevance maps (a remote "
                "endpoint returns text only)"
            )
        if reason is None and image is not None and isinstance(runtime, RelevanceRuntime):
            start = len(out.groundings)
            grounded = ground_findings(
                runtime, self._kb, image, items, out.flags, cfg, film, start_index=start
            )
            out.groundings.extend(grounded)
            out.flags.extend(side_flags(grounded, self._kb, items, cfg))
            summary["status"] = "ran"
            summary["attempts"] = len(grounded)
            summary["failed"] = sum(1 for g in grounded if g.status == "failed")
            summary["with_boxes"] = sum(1 for g in grounded if g.boxes)
        elif out.groundings:
            summary["status"] = "ran"
            summary["attempts"] = len(out.groundings)
            summary["relevance_skipped"] = reason
        else:
            summary["status"] = "skipped"
            summary["reason"] = reason
        out.grounding = summary
        if out.groundings:
            out.flags, out.answers = attach_grounding(out.flags, out.answers, out.groundings)

    def _ask(
        self,
        runtime: VisionLanguageRuntime,
        image: NDArray[np.uint8] | None,
        template: PromptTemplate,
        instruction: str,
        target: str | None,
        parse: Callable[[str], str | None],
        max_new_tokens: int,
    ) -> ModelAnswer:
        t0 = time.perf_counter()
        try:
            result = runtime.generate(image, instruction, max_new_tokens=max_new_tokens)
        except MedVLMError as exc:
            logger.warning("model check %s failed: %s", template.ref, type(exc).__name__)
            return ModelAnswer(
                template.id,
                template.version,
                target,
                "",
                None,
                error=f"{type(exc).__name__}: {exc}",
            )
        elapsed = (time.perf_counter() - t0) * 1000.0
        parsed = parse(result.text)
        text = None if parsed is None else str(parsed)
        return ModelAnswer(
            template.id,
            template.version,
            target,
            result.text,
            text,
            timings_ms={"generate": elapsed},
        )

    def _generate_and_compare(
        self,
        runtime: VisionLanguageRuntime,
        report: ParsedReport,
        image: NDArray[np.uint8],
        items: list[Item],
        out: ModelCheckOutcome,
    ) -> None:
        template, instruction = render_generate(report.text_of(SectionName.INDICATION) or None)
        answer = self._ask(
            runtime,
            image,
            template,
            instruction,
            None,
            lambda t: t.strip() or None,
            self._config.max_new_tokens,
        )
        out.answers.append(answer)
        if answer.parsed is None:
            return
        generated = self._parser.parse_sections({SectionName.FINDINGS: answer.parsed})
        section = generated.section(SectionName.FINDINGS)
        if section is None:
            return
        gen = [Item(SectionName.FINDINGS, s, m) for s, m in section.mentions()]
        kb = self._kb

        def flag(
            what: str, subtype: ErrorSubtype, message: str, generated: Item, item: Item | None
        ) -> Flag:
            return make_flag(
                subtype=subtype,
                rule_id=f"model.generate_compare.{what}",
                rule_version=template.version,
                source=FlagSource.MODEL,
                confidence=self._config.model_flag_confidence,
                message=message,
                item=item,
                section=SectionName.FINDINGS if item is None else None,
                concept=generated.mention.concept if item is None else None,
                extra={
                    "prompt_id": template.id,
                    "prompt_version": template.version,
                    "model_answer": answer.raw_text,
                    "ai_generated": True,
                    "generated_sentence": generated.sentence.text,
                },
            )

        seen: set[str] = set()
        for item in items:  # FINDINGS first: one model flag per concept, on its first sentence
            entry = kb[item.mention.concept]
            if entry.category is Category.GENERIC or item.mention.historical:
                continue
            if item.mention.concept in seen:
                continue
            seen.add(item.mention.concept)
            present = [g for g in gen if g.mention.concept == item.mention.concept and g.asserted]
            denies = [
                g
                for g in gen
                if g.denied
                and kb.covers(g.mention.concept, item.mention.concept)
                and OTHERWISE not in g.mention.qualifiers
            ]
            for row in _PRESENCE:
                g = row.evidence(item, present, denies)
                if g is not None:
                    message = row.message(entry.name, item, g)
                    out.flags.append(flag(row.what, row.subtype, message, g, item))
                    break
            else:
                if item.asserted and present:
                    g = present[0]
                    for attribute in _ATTRIBUTES:
                        if attribute.differs(item.mention, g.mention):
                            message = attribute.message(entry.name, item, g)
                            out.flags.append(
                                flag(attribute.what, attribute.subtype, message, g, item)
                            )
        mentioned = {i.mention.concept for i in items}
        for g in gen:
            entry = kb[g.mention.concept]
            if not g.asserted or entry.category is not Category.FINDING:
                continue
            if g.mention.concept in mentioned or any(
                i.denied and kb.covers(i.mention.concept, g.mention.concept) for i in items
            ):
                continue
            mentioned.add(g.mention.concept)
            message = (
                f"The model reports {entry.name} ('{g.sentence.text}'), which the report "
                "does not mention."
            )
            out.flags.append(flag("missed", ErrorSubtype.REMOVE_FINDING, message, g, None))

    def _targets(self, items: list[Item]) -> list[Item]:
        seen: set[tuple[str, Presence, Side | None]] = set()
        out: list[Item] = []
        for item in items:
            entry = self._kb[item.mention.concept]
            if entry.category is Category.GENERIC or not (item.asserted or item.denied):
                continue
            key = (item.mention.concept, item.mention.presence, item.mention.laterality)
            if key in seen:
                continue
            seen.add(key)
            out.append(item)
        return out[: self._config.max_verify_prompts]

    def _verify(
        self,
        runtime: VisionLanguageRuntime,
        image: NDArray[np.uint8] | None,
        items: list[Item],
        out: ModelCheckOutcome,
    ) -> None:
        conf = self._config.model_flag_confidence
        for item in self._targets(items):
            entry = self._kb[item.mention.concept]
            side = None if item.mention.laterality is None else item.mention.laterality.value
            instruction = render_verify(entry, side, item.mention.zones)
            answer = self._ask(
                runtime,
                image,
                VERIFY_FINDING,
                instruction,
                entry.id,
                _yes_no,
                8,
            )
            out.answers.append(answer)
            extra = {
                "prompt_id": VERIFY_FINDING.id,
                "prompt_version": VERIFY_FINDING.version,
                "question": instruction,
                "model_answer": answer.raw_text,
                "ai_generated": True,
            }
            if answer.parsed == "no" and item.asserted:
                out.flags.append(
                    make_flag(
                        subtype=ErrorSubtype.INSERT_FINDING,
                        rule_id="model.verify.absent",
                        rule_version=VERIFY_FINDING.version,
                        source=FlagSource.MODEL,
                        confidence=conf,
                        item=item,
                        extra=extra,
                        message=(
                            f"Asked whether {entry.name} is visible as described, the model "
                            f"answered no; {item.where()} reports it."
                        ),
                    )
                )
            elif answer.parsed == "yes" and item.denied:
                out.flags.append(
                    make_flag(
                        subtype=ErrorSubtype.NEGATION,
                        rule_id="model.verify.present",
                        rule_version=VERIFY_FINDING.version,
                        source=FlagSource.MODEL,
                        confidence=conf,
                        item=item,
                        extra=extra,
                        message=(
                            f"Asked whether {entry.name} is visible, the model answered yes; "
                            f"{item.where()} denies it."
                        ),
                    )
                )

    def _localise(
        self,
        runtime: VisionLanguageRuntime,
        image: NDArray[np.uint8],
        items: list[Item],
        out: ModelCheckOutcome,
        film: FilmContext,
    ) -> None:
        """Box-native models: ``LOCALISE_FINDING`` answers a box in fractions of the film sent."""
        height, width = int(image.shape[0]), int(image.shape[1])
        conf = self._config.model_flag_confidence
        for item in self._targets(items):
            side = item.mention.laterality
            if not item.asserted or side not in (Side.LEFT, Side.RIGHT):
                continue
            entry = self._kb[item.mention.concept]

            def _parse(text: str) -> str | None:
                box = parse_box_answer(text)
                if box is None:
                    return None
                if box is False:
                    return "none"
                assert isinstance(box, Box)
                return f"[{box.x1}, {box.y1}, {box.x2}, {box.y2}]"

            answer = self._ask(
                runtime, image, LOCALISE_FINDING, render_localise(entry), entry.id, _parse, 32
            )
            out.answers.append(answer)
            box = parse_box_answer(answer.raw_text) if answer.parsed not in (None, "none") else None
            if not isinstance(box, Box):
                continue
            pixels = box.to_pixels(width, height)
            film_box = FilmBox(
                box=(float(pixels[0]), float(pixels[1]), float(pixels[2]), float(pixels[3])),
                label=entry.name,
                mass_fraction=1.0,
                area_fraction=(box.x2 - box.x1) * (box.y2 - box.y1),
            )
            # Frontal films are displayed in the anatomical position: the patient's right is on the
            # viewer's left (unless PatientOrientation says the film is flipped). A box clearly on
            # the other half contradicts the reported side.
            reading = box_side(
                film_box.box,
                width,
                patient_orientation=film.patient_orientation,
                view_position=film.view_position,
            )
            grounding = Grounding(
                index=len(out.groundings),
                target=entry.id,
                label=entry.name,
                source="model",
                method="localise_finding",
                status="ok",
                question=render_localise(entry),
                prompt_id=LOCALISE_FINDING.id,
                prompt_version=LOCALISE_FINDING.version,
                boxes=(film_box,),
                statistics={"box_normalised": [box.x1, box.y1, box.x2, box.y2]},
                side=reading,
                film_size=(width, height),
                timings_ms=dict(answer.timings_ms),
            )
            out.groundings.append(grounding)
            box_side_ = None if reading.side is None else Side(reading.side)
            if box_side_ is None or box_side_ is side:
                continue
            out.flags.append(
                make_flag(
                    subtype=ErrorSubtype.LATERALITY,
                    rule_id="model.localise.side",
                    rule_version=LOCALISE_FINDING.version,
                    source=FlagSource.MODEL,
                    confidence=conf,
                    item=item,
                    message=(
                        f"The model locates {entry.name} on the patient's {box_side_.value} side "
                        f"of the image; {item.where()} says {side.value}."
                    ),
                    extra={
                        "prompt_id": LOCALISE_FINDING.id,
                        "prompt_version": LOCALISE_FINDING.version,
                        "model_answer": answer.raw_text,
                        "box_normalised": [box.x1, box.y1, box.x2, box.y2],
                        "box_pixels": pixels,
                        "boxes": grounding.box_evidence(),
                        "grounding": grounding.evidence(),
                        "ai_generated": True,
                    },
                )
            )
