"""A checker result reduced to what evaluation needs (`Prediction`), and its JSONL form."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eval.errors import RunnerError
from eval.records import JSONDict
from medvlm.taxonomy import ComplexClass

FLAG_FIELDS = (
    "subtype",
    "complex_class",
    "severity",
    "source",
    "rule_id",
    "section",
    "sentence_index",
    "start",
    "end",
    "confidence",
)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The checker's answer for one row: verdicts, flags (location fields only), model trouble."""

    id: str
    pred_simple: str
    pred_complex: ComplexClass
    flags: tuple[Mapping[str, Any], ...]
    unparseable_answers: int

    @classmethod
    def from_check_result(cls, row_id: str, result: Mapping[str, Any]) -> Prediction:
        """Read ``CheckResult.to_dict()`` (the API response body)."""
        simple = result.get("verdict_simple")
        if simple not in ("Y", "N"):
            raise RunnerError(
                f"row {row_id}: checker result has verdict_simple={simple!r}, expected 'Y' or 'N'; "
                "is the service a RadCheck check-report endpoint?"
            )
        try:
            complex_ = ComplexClass(str(result.get("verdict_complex")))
        except ValueError:
            raise RunnerError(
                f"row {row_id}: checker result has unknown verdict_complex "
                f"{result.get('verdict_complex')!r}"
            ) from None
        raw_flags = result.get("flags") or []
        if not isinstance(raw_flags, Sequence):
            raise RunnerError(f"row {row_id}: checker result 'flags' is not a list")
        flags = tuple({key: flag.get(key) for key in FLAG_FIELDS} for flag in raw_flags)
        unparseable = result.get("unparseable_answers") or 0
        count = len(unparseable) if isinstance(unparseable, Sequence) else int(unparseable)
        return cls(row_id, simple, complex_, flags, count)

    def to_dict(self) -> JSONDict:
        """The ``predictions.jsonl`` row."""
        return {
            "id": self.id,
            "pred_simple": self.pred_simple,
            "pred_complex": self.pred_complex.value,
            "flags": [dict(flag) for flag in self.flags],
            "unparseable_answers": self.unparseable_answers,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Prediction:
        """Read a ``predictions.jsonl`` row back."""
        return cls(
            id=str(row["id"]),
            pred_simple=str(row["pred_simple"]),
            pred_complex=ComplexClass(row["pred_complex"]),
            flags=tuple(row.get("flags") or ()),
            unparseable_answers=int(row.get("unparseable_answers") or 0),
        )

    def max_confidence(self) -> float:
        """Highest flag confidence (0 without flags): the row's score for distribution plots."""
        values = [float(f["confidence"]) for f in self.flags if f.get("confidence") is not None]
        return max(values, default=0.0)

    def points_at(self, sentence_index: int) -> bool:
        """Some flag points at findings sentence ``sentence_index``."""
        return any(
            f.get("section") == "findings" and f.get("sentence_index") == sentence_index
            for f in self.flags
        )
