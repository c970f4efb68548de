"""Report parsing: raw text or given sections -> :class:`ParsedReport` with sentences and mentions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from medvlm.errors import MedVLMError
from medvlm.prompts.knowledge import KnowledgeBase, load_knowledge_base
from medvlm.reports.mentions import MentionExtractor
from medvlm.reports.model import Mention, Section, SectionName, Sentence
from medvlm.reports.segment import normalise_text, split_sections, split_sentences

__all__ = ["ParsedReport", "ReportParseError", "ReportParser", "default_parser", "parse_report"]

MAX_REPORT_CHARS = 100_000


class ReportParseError(MedVLMError, ValueError):
    """Report text could not be parsed (wrong type, empty, or too long)."""


@dataclass(frozen=True)
class ParsedReport:
    """A parsed report: sections by name (read-only mapping) and the KB version used for mentions."""

    sections: Mapping[SectionName, Section]
    kb_version: str

    @classmethod
    def from_sections(
        cls,
        *,
        findings: str | None = None,
        impression: str | None = None,
        indication: str | None = None,
        comparison: str | None = None,
        technique: str | None = None,
        other: str | None = None,
    ) -> ParsedReport:
        """Parse already separated sections (IU XML, API fields) with the packaged knowledge base."""
        return default_parser().parse_sections(
            {
                SectionName.FINDINGS: findings,
                SectionName.IMPRESSION: impression,
                SectionName.INDICATION: indication,
                SectionName.COMPARISON: comparison,
                SectionName.TECHNIQUE: technique,
                SectionName.OTHER: other,
            }
        )

    def section(self, name: SectionName | str) -> Section | None:
        return self.sections.get(SectionName(name))

    def text_of(self, name: SectionName | str) -> str:
        section = self.section(name)
        return "" if section is None else section.text

    def mentions(self) -> Iterator[tuple[Section, Sentence, Mention]]:
        for section in self.sections.values():
            for sentence, mention in section.mentions():
                yield section, sentence, mention

    def to_dict(self) -> dict[str, Any]:
        return {
            "kb_version": self.kb_version,
            "sections": {name.value: s.to_dict() for name, s in self.sections.items()},
        }


class ReportParser:
    """Parses reports against one knowledge base; immutable after construction, thread-safe."""

    def __init__(self, kb: KnowledgeBase | None = None) -> None:
        self._kb = kb if kb is not None else load_knowledge_base()
        self._extractor = MentionExtractor(self._kb)

    @property
    def kb(self) -> KnowledgeBase:
        return self._kb

    def parse(self, text: str) -> ParsedReport:
        """Parse raw report text (IU style, MIMIC style with FINAL REPORT and headers, or bare)."""
        _check_text(text, "report text")
        merged: dict[SectionName, list[str]] = {}
        for name, body in split_sections(text):
            merged.setdefault(name, []).append(body)
        return self.parse_sections({k: "\n\n".join(v) for k, v in merged.items()})

    def parse_sections(self, sections: Mapping[SectionName, str | None]) -> ParsedReport:
        out: dict[SectionName, Section] = {}
        for name, raw in sections.items():
            if raw is None:
                continue
            _check_text(raw, f"section {SectionName(name).value!r}")
            text = normalise_text(raw)
            if not text:
                continue
            sentences = tuple(
                Sentence(i, text[s:e], s, e, self._extractor.extract(text[s:e], s))
                for i, (s, e) in enumerate(split_sentences(text))
            )
            out[SectionName(name)] = Section(SectionName(name), text, sentences)
        return ParsedReport(MappingProxyType(out), self._kb.version)


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str):
        raise ReportParseError(f"{what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_REPORT_CHARS:
        raise ReportParseError(
            f"{what} has {len(text)} characters, more than the {MAX_REPORT_CHARS} a chest X-ray "
            "report can plausibly have; send one report at a time"
        )


@lru_cache(maxsize=1)
def default_parser() -> ReportParser:
    """The parser over the packaged knowledge base, built once on first use."""
    return ReportParser()


def parse_report(text: str) -> ParsedReport:
    """Parse raw report text with the packaged knowledge base."""
    return default_parser().parse(text)
