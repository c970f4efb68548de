"""Small helpers that turn report positions into flag fields and JSON evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medvlm.checking.types import Flag
from medvlm.reports import Mention, Presence, SectionName, Sentence
from medvlm.taxonomy import ErrorSubtype, FlagSource, Severity

__all__ = ["Item", "make_flag", "sentence_ref"]


@dataclass(frozen=True)
class Item:
    """A mention in its section and sentence."""

    section: SectionName
    sentence: Sentence
    mention: Mention

    @property
    def asserted(self) -> bool:
        return self.mention.presence is Presence.PRESENT and not self.mention.historical

    @property
    def described(self) -> bool:
        """Asserted or hedged (not denied, not history): its attributes can be compared."""
        return self.mention.presence is not Presence.ABSENT and not self.mention.historical

    @property
    def denied(self) -> bool:
        return self.mention.presence is Presence.ABSENT and not self.mention.historical

    def where(self) -> str:
        return f"{self.section.value} sentence {self.sentence.index + 1}"


def sentence_ref(section: SectionName | str, sentence: Sentence) -> dict[str, Any]:
    return {
        "section": str(section),
        "sentence_index": sentence.index,
        "start": sentence.start,
        "end": sentence.end,
        "text": sentence.text,
    }


def make_flag(
    *,
    subtype: ErrorSubtype,
    rule_id: str,
    rule_version: str,
    message: str,
    confidence: float,
    item: Item | None = None,
    section: SectionName | None = None,
    sentence: Sentence | None = None,
    concept: str | None = None,
    other: Item | None = None,
    source: FlagSource = FlagSource.TEXT_RULE,
    severity: Severity = Severity.WARNING,
    extra: dict[str, Any] | None = None,
) -> Flag:
    """A flag pointing at ``item``'s sentence (or ``section``/``sentence``), with evidence."""
    if item is not None:
        section, sentence = item.section, item.sentence
        concept = concept or item.mention.concept
    evidence: dict[str, Any] = {"rule_id": rule_id, "rule_version": rule_version}
    if item is not None:
        evidence["mention"] = item.mention.to_dict()
    if other is not None:
        evidence["contradicts"] = sentence_ref(other.section, other.sentence)
        evidence["contradicting_mention"] = other.mention.to_dict()
    if item is not None and other is not None and source is FlagSource.TEXT_RULE:
        from medvlm.checking.suggestions import suggestions_for

        suggestions = suggestions_for(subtype, item, other)
        if suggestions:
            evidence["suggestions"] = suggestions
    if extra:
        evidence.update(extra)
    return Flag(
        subtype=subtype,
        severity=severity,
        source=source,
        rule_id=rule_id,
        message=message,
        confidence=confidence,
        section=None if section is None else section.value,
        sentence_index=None if sentence is None else sentence.index,
        start=None if sentence is None else sentence.start,
        end=None if sentence is None else sentence.end,
        concept=concept,
        evidence=evidence,
    )
