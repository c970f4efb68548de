"""Typed, immutable results of report parsing: sections, sentences with spans, finding mentions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Measurement",
    "Mention",
    "Presence",
    "Section",
    "SectionName",
    "Sentence",
    "Side",
]


class SectionName(StrEnum):
    """Report sections the parser recognises (HISTORY and REASON FOR EXAM map to INDICATION)."""

    FINDINGS = "findings"
    IMPRESSION = "impression"
    INDICATION = "indication"
    COMPARISON = "comparison"
    TECHNIQUE = "technique"
    OTHER = "other"


class Presence(StrEnum):
    """Whether the report asserts, denies or hedges a finding (ConText-style assertion)."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


class Side(StrEnum):
    """Laterality of a mention (patient's side)."""

    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"

    def compatible(self, other: Side) -> bool:
        """Left and right contradict each other; bilateral is compatible with both."""
        return self is other or Side.BILATERAL in (self, other)


@dataclass(frozen=True)
class Measurement:
    """A size or distance stated next to a mention (``value`` in ``unit`` as written)."""

    value: float
    unit: str
    text: str

    @property
    def value_mm(self) -> float | None:
        scale = {"mm": 1.0, "cm": 10.0, "m": 1000.0}.get(self.unit)
        return None if scale is None else self.value * scale


@dataclass(frozen=True)
class Mention:
    """One finding or device mentioned in a sentence.

    ``start``/``end`` are character offsets within the section text. ``grades`` holds the ordinal
    severity (0 trace/minimal, 1 small/mild, 2 moderate, 3 large/severe), a set because reports say
    "mild to moderate". ``zones`` is a subset of {"upper", "mid", "lower"}.
    """

    concept: str
    text: str
    start: int
    end: int
    presence: Presence
    laterality: Side | None = None
    zones: frozenset[str] = frozenset()
    severity: str | None = None
    grades: frozenset[int] = frozenset()
    measurement: Measurement | None = None
    interval: str | None = None
    device: bool = False
    historical: bool = False
    normal_phrase: bool = False
    qualifiers: frozenset[str] = frozenset()
    cues: tuple[str, ...] = ()
    hedge: str | None = None
    dominant: Side | None = None
    """For a bilateral finding, the side said to be worse ("left larger than right")."""
    """For an uncertain mention: "possible" (probable, likely, suspected, may represent), "weak"
    (cannot be excluded) or "hypothetical" (rule out, evaluate for)."""

    @property
    def location(self) -> str | None:
        return "+".join(sorted(self.zones)) if self.zones else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "presence": self.presence.value,
            "laterality": None if self.laterality is None else self.laterality.value,
            "location": self.location,
            "severity": self.severity,
            "measurement": None
            if self.measurement is None
            else {"value": self.measurement.value, "unit": self.measurement.unit},
            "interval": self.interval,
            "device": self.device,
            "historical": self.historical,
            "qualifiers": sorted(self.qualifiers),
        }


@dataclass(frozen=True)
class Sentence:
    """A sentence of a section; ``start``/``end`` index the section text."""

    index: int
    text: str
    start: int
    end: int
    mentions: tuple[Mention, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "mentions": [m.to_dict() for m in self.mentions],
        }


@dataclass(frozen=True)
class Section:
    """One section: whitespace-normalised text and its sentences."""

    name: SectionName
    text: str
    sentences: tuple[Sentence, ...] = field(default_factory=tuple)

    def mentions(self) -> Iterator[tuple[Sentence, Mention]]:
        for sentence in self.sentences:
            for mention in sentence.mentions:
                yield sentence, mention

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "sentences": [s.to_dict() for s in self.sentences]}


SectionMap = Mapping[SectionName, Section]
