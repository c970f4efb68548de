"""Public value types of the checker: header facts, flags, model answers, results, configuration."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from medvlm.errors import MedVLMError
from medvlm.taxonomy import COMPLEX_CLASS_OF, ComplexClass, ErrorSubtype, FlagSource, Severity

__all__ = [
    "CheckResult",
    "CheckerConfig",
    "CheckerError",
    "CheckerInputError",
    "Flag",
    "HeaderFacts",
    "ModelAnswer",
]

SexCode = Literal["M", "F", "O"]
_SEX_ALIASES: dict[str, SexCode] = {
    "m": "M",
    "male": "M",
    "man": "M",
    "f": "F",
    "female": "F",
    "woman": "F",
    "o": "O",
    "other": "O",
}
_HEADER_KEYS: dict[str, str] = {
    "patient_sex": "patient_sex",
    "sex": "patient_sex",
    "patientsex": "patient_sex",
    "patient_age_years": "patient_age_years",
    "age": "patient_age_years",
    "age_years": "patient_age_years",
    "view_position": "view_position",
    "viewposition": "view_position",
    "view": "view_position",
    "body_part": "body_part",
    "bodypartexamined": "body_part",
    "body_part_examined": "body_part",
    "image_laterality": "image_laterality",
    "imagelaterality": "image_laterality",
    "laterality": "image_laterality",
    "portable": "portable",
    "modality": "modality",
}


class CheckerError(MedVLMError):
    """Root of the checker's errors."""


class CheckerInputError(CheckerError, ValueError):
    """A check request is malformed (bad header facts, image or report)."""


class CheckerConfigError(CheckerError, ValueError):
    """A :class:`CheckerConfig` value is out of range."""


class CheckTimeBudgetError(CheckerError):
    """A check ran past its time budget; it stopped at a stage boundary and returned nothing."""


@dataclass(frozen=True)
class HeaderFacts:
    """The DICOM header facts the report is checked against (all optional)."""

    patient_sex: SexCode | None = None
    patient_age_years: float | None = None
    view_position: str | None = None
    body_part: str | None = None
    image_laterality: str | None = None
    portable: bool | None = None
    modality: str | None = None

    def __post_init__(self) -> None:
        if self.patient_sex not in (None, "M", "F", "O"):
            raise CheckerInputError(
                f"patient_sex {self.patient_sex!r} is not one of 'M', 'F', 'O'; use DICOM PatientSex codes"
            )
        age = self.patient_age_years
        if age is not None and (not math.isfinite(age) or not 0 <= age <= 130):
            raise CheckerInputError(
                f"patient_age_years {age!r} is outside 0..130; send years as a number"
            )
        if self.image_laterality not in (None, "L", "R", "B", "U"):
            raise CheckerInputError(
                f"image_laterality {self.image_laterality!r} is not one of 'L', 'R', 'B', 'U' (DICOM)"
            )

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, parse_age: Callable[[str], float | None] | None = None
    ) -> HeaderFacts:
        """Build from a JSON object; accepts snake_case or DICOM keywords (``PatientSex``).

        An age is a number of years; a DICOM age string (``'045Y'``) is read by ``parse_age``
        when one is given (pass ``dicom_io.parse_age``: the one DICOM age parser), else refused.
        """
        if not isinstance(data, Mapping):
            raise CheckerInputError(f"header must be a JSON object, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = _HEADER_KEYS.get(str(key).lower())
            if name is None:
                raise CheckerInputError(
                    f"unknown header field {key!r}; use one of {sorted(set(_HEADER_KEYS.values()))}"
                )
            if value is None or value == "":
                continue
            values[name] = _coerce(name, value, parse_age)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient_sex": self.patient_sex,
            "patient_age_years": self.patient_age_years,
            "view_position": self.view_position,
            "body_part": self.body_part,
            "image_laterality": self.image_laterality,
            "portable": self.portable,
            "modality": self.modality,
        }


def _coerce(name: str, value: Any, parse_age: Callable[[str], float | None] | None) -> Any:
    if name == "patient_sex":
        code = _SEX_ALIASES.get(str(value).strip().lower())
        if code is None:
            raise CheckerInputError(f"patient_sex {value!r} is not M, F or O")
        return code
    if name == "patient_age_years":
        if isinstance(value, bool):
            raise CheckerInputError(f"patient_age_years {value!r} must be a number")
        if isinstance(value, str):
            text = value.strip()
            try:
                return float(text)
            except ValueError:
                pass
            years = parse_age(text) if parse_age is not None else None
            if years is None:
                raise CheckerInputError(
                    f"patient_age_years {value!r} is not a number"
                    + (
                        " nor a DICOM age like '045Y'"
                        if parse_age is not None
                        else " (a DICOM age like '045Y' needs parse_age=dicom_io.parse_age)"
                    )
                )
            return years
        if isinstance(value, int | float):
            return float(value)
        raise CheckerInputError(f"patient_age_years {value!r} must be a number")
    if name == "portable":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
        raise CheckerInputError(f"portable {value!r} must be true or false")
    if not isinstance(value, str):
        raise CheckerInputError(f"{name} {value!r} must be a string")
    text = value.strip().upper()
    if name == "image_laterality":
        text = {"LEFT": "L", "RIGHT": "R", "BOTH": "B", "UNPAIRED": "U"}.get(text, text)
    return text


@dataclass(frozen=True)
class Flag:
    """One suspected error, explainable on its own (unverified output of automated checks).

    ``start``/``end`` index the text of ``section``; ``sentence_index`` counts within the section.
    ``evidence`` is JSON-serialisable: the contradicting sentence, rule or prompt id and version, the
    raw model answer, a box if any.
    """

    subtype: ErrorSubtype
    severity: Severity
    source: FlagSource
    rule_id: str
    message: str
    confidence: float
    section: str | None = None
    sentence_index: int | None = None
    start: int | None = None
    end: int | None = None
    concept: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    complex_class: ComplexClass = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise CheckerError(f"flag confidence {self.confidence} outside 0..1 ({self.rule_id})")
        object.__setattr__(self, "complex_class", COMPLEX_CLASS_OF[self.subtype])

    @property
    def key(self) -> str:
        """De-duplication key: same subtype, section, sentence and concept are one flag."""
        return f"{self.subtype.value}|{self.section}|{self.sentence_index}|{self.concept}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "subtype": self.subtype.value,
            "complex_class": self.complex_class.value,
            "severity": self.severity.value,
            "source": self.source.value,
            "rule_id": self.rule_id,
            "message": self.message,
            "section": self.section,
            "sentence_index": self.sentence_index,
            "start": self.start,
            "end": self.end,
            "concept": self.concept,
            "confidence": round(self.confidence, 4),
            "evidence": self.evidence,
            "suggestions": self.suggestions,
        }

    @property
    def suggestions(self) -> list[dict[str, Any]]:
        """Suggested corrections (both readings of a contradiction); never applied."""
        value = self.evidence.get("suggestions", [])
        return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class ModelAnswer:
    """One model question and its raw answer (unverified AI output), parsed strictly."""

    prompt_id: str
    prompt_version: str
    target: str | None
    raw_text: str
    parsed: str | None
    error: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    """Extra evidence about the answer (the boxes of its finding, when grounded)."""

    @property
    def parseable(self) -> bool:
        return self.parsed is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "prompt_version": self.prompt_version,
            "target": self.target,
            "raw_text": self.raw_text,
            "parsed": self.parsed,
            "parseable": self.parseable,
            "error": self.error,
            "timings_ms": self.timings_ms,
            "ai_generated": True,
            **({"evidence": self.evidence} if self.evidence else {}),
        }


@dataclass(frozen=True)
class CheckResult:
    """Flags and per-report verdicts for one report (SIMPLE Y/N, COMPLEX class)."""

    flags: tuple[Flag, ...]
    verdict_simple: Literal["Y", "N"]
    verdict_complex: ComplexClass
    unparseable_answers: int
    model_answers: tuple[ModelAnswer, ...]
    provenance: dict[str, Any]
    timings_ms: dict[str, float]
    groundings: tuple[Any, ...] = ()
    """:class:`medvlm.checking.grounding.Grounding` records (boxes, maps), in order."""
    grounding: dict[str, Any] = field(default_factory=dict)
    """What grounding did for this check: ``status`` (``ran`` or ``skipped``) and why."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict_simple": self.verdict_simple,
            "verdict_complex": self.verdict_complex.value,
            "flags": [f.to_dict() for f in self.flags],
            "unparseable_answers": self.unparseable_answers,
            "model_answers": [a.to_dict() for a in self.model_answers],
            "provenance": self.provenance,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "grounding": self.grounding,
            "groundings": [g.to_dict() for g in self.groundings],
            "disclaimer": "Automated check (unverified): a radiologist must review every flag.",
        }


@dataclass(frozen=True)
class CheckerConfig:
    """Which checks run and how their results are fused (validated at construction)."""

    kb_path: str | None = None
    text_checks: bool = True
    header_checks: bool = True
    model_checks: bool = True
    simple_prompt: bool = True
    complex_prompt: bool = True
    generate_and_compare: bool = True
    verify_findings: bool = True
    localise_findings: bool = True
    max_verify_prompts: int = 8
    grounding: bool = True
    max_grounding_calls: int = 4
    grounding_method: str = "gradient_x_input"
    grounding_threshold: float = 0.5
    max_new_tokens: int = 256
    verdict_threshold: float = 0.5
    model_flag_confidence: float = 0.4
    use_model_verdict: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.max_verify_prompts <= 64:
            raise CheckerConfigError(
                f"max_verify_prompts {self.max_verify_prompts} outside 0..64; each costs one generation"
            )
        if not 0 <= self.max_grounding_calls <= 32:
            raise CheckerConfigError(
                f"max_grounding_calls {self.max_grounding_calls} outside 0..32; each costs about "
                "three forward passes (gradient x input) or one per occluded patch (occlusion)"
            )
        if self.grounding_method not in ("gradient_x_input", "occlusion"):
            raise CheckerConfigError(
                f"grounding_method {self.grounding_method!r} is not 'gradient_x_input' or 'occlusion'"
            )
        if not 0.0 < self.grounding_threshold < 1.0:
            raise CheckerConfigError(
                f"grounding_threshold {self.grounding_threshold} outside (0, 1): a fraction of "
                "the relevance map's peak"
            )
        if not 1 <= self.max_new_tokens <= 4096:
            raise CheckerConfigError(f"max_new_tokens {self.max_new_tokens} outside 1..4096")
        for name in ("verdict_threshold", "model_flag_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CheckerConfigError(f"{name} {value} outside 0..1")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
