"""The knowledge base of chest X-ray findings decomposed into visual attributes.

The data lives in a versioned YAML file (``data/cxr_findings_kb.yaml``) with its sources; this module
loads it, validates it (fails at construction with a message that names the entry and the fix) and
compiles the term matcher the report parser uses. Grounding prompts are built from the attributes
(see :mod:`medvlm.prompts.checking`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medvlm.errors import MedVLMError

__all__ = [
    "DEFAULT_KB_FILE",
    "Category",
    "Finding",
    "FindingAttributes",
    "KnowledgeBase",
    "KnowledgeBaseError",
    "LateralityBehaviour",
    "build_knowledge_base",
    "compile_alternation",
    "load_knowledge_base",
]

DEFAULT_KB_FILE = "cxr_findings_kb.yaml"
_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class KnowledgeBaseError(MedVLMError, ValueError):
    """The knowledge-base file is missing, malformed or inconsistent."""


class Category(StrEnum):
    """What kind of entry a knowledge-base concept is."""

    FINDING = "finding"
    DEVICE = "device"
    GENERIC = "generic"


class LateralityBehaviour(StrEnum):
    """How a finding relates to the sides of the chest."""

    EITHER = "either"
    UNILATERAL = "unilateral"
    BILATERAL = "bilateral"
    MIDLINE = "midline"
    NONE = "none"


@dataclass(frozen=True)
class FindingAttributes:
    """Visual attributes in the Fleischner glossary's words (the decomposed description)."""

    location: str
    shape: str
    density: str
    laterality: LateralityBehaviour
    size_scale: str


@dataclass(frozen=True)
class Finding:
    """One concept: a finding, a device or a generic statement ("no acute disease")."""

    id: str
    name: str
    category: Category
    synonyms: tuple[str, ...]
    normal_phrases: tuple[str, ...]
    attributes: FindingAttributes
    sources: tuple[str, ...]
    labels: tuple[str, ...] = ()
    covers: frozenset[str] = frozenset()
    implies: frozenset[str] = frozenset()
    excludes: frozenset[str] = frozenset()
    acute: bool = False
    critical: bool = False
    broad: bool = False
    acute_when: frozenset[str] = frozenset()
    significant_when: tuple[str, ...] = ()
    side_group: str | None = None
    sex_specific: str | None = None
    radlex: str | None = None

    @property
    def is_device(self) -> bool:
        return self.category is Category.DEVICE

    @property
    def sided(self) -> bool:
        """True when a side (left/right/bilateral) is meaningful for this concept."""
        return self.attributes.laterality not in (
            LateralityBehaviour.MIDLINE,
            LateralityBehaviour.NONE,
        )


@dataclass(frozen=True)
class KnowledgeBase:
    """The validated knowledge base plus its compiled term matcher (immutable, thread-safe)."""

    version: str
    source_file: str
    sources: dict[str, str]
    findings: dict[str, Finding]
    term_pattern: re.Pattern[str] = field(repr=False)
    normal_pattern: re.Pattern[str] = field(repr=False)
    term_concepts: tuple[str, ...] = field(repr=False)
    normal_concepts: tuple[str, ...] = field(repr=False)

    def concept_of(self, match: re.Match[str]) -> str:
        """The concept of a ``term_pattern`` match."""
        return self.term_concepts[match.lastindex or 0]

    def normal_concept_of(self, match: re.Match[str]) -> str:
        """The concept a ``normal_pattern`` match states is absent."""
        return self.normal_concepts[match.lastindex or 0]

    def __getitem__(self, concept_id: str) -> Finding:
        return self.findings[concept_id]

    def __contains__(self, concept_id: object) -> bool:
        return concept_id in self.findings

    def __len__(self) -> int:
        return len(self.findings)

    def covers(self, denied: str, asserted: str) -> bool:
        """Whether denying ``denied`` also denies ``asserted`` (same concept or a covered child)."""
        if denied == asserted:
            return True
        entry = self.findings.get(denied)
        return entry is not None and asserted in entry.covers

    def same_side_group(self, a: str, b: str) -> bool:
        """Whether two concepts describe the same process for side/location comparison."""
        if a == b:
            return True
        ga = self.findings[a].side_group
        return ga is not None and ga == self.findings[b].side_group

    def source_texts(self, concept_id: str) -> list[str]:
        return [self.sources[key] for key in self.findings[concept_id].sources]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise KnowledgeBaseError(f"{where} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _first_chars(items: Any) -> set[str] | None:
    """Lower-case characters a parsed regex can start with; ``None`` when it cannot be told."""
    out: set[str] = set()
    for op, av in items:
        name = str(op)
        if name in ("ASSERT", "ASSERT_NOT", "AT"):
            continue  # zero-width: look at what follows
        if name == "LITERAL":
            out.add(chr(av).lower())
            return out
        if name == "IN":
            for kind, value in av:
                if str(kind) != "LITERAL":
                    return None
                out.add(chr(value).lower())
            return out
        if name == "SUBPATTERN":
            sub = _first_chars(av[-1])
            return None if sub is None else out | sub
        if name == "BRANCH":
            for branch in av[1]:
                sub = _first_chars(branch)
                if sub is None:
                    return None
                out |= sub
            return out
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, _, body = av
            sub = _first_chars(body)
            if sub is None:
                return None
            out |= sub
            if low > 0:
                return out
            continue  # optional: the next item can start the match too
        return None
    return None


def compile_alternation(
    parts: Sequence[str], *, prefix: str = "", suffix: str = "", flags: int = re.IGNORECASE
) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """Compile ``prefix(?:part0|part1|...)suffix`` so that a match's ``lastindex`` names its part.

    Returns the pattern and ``part_of``: ``part_of[match.lastindex]`` is the index in ``parts``.
    Parts are bucketed by the character they can start with (behind a lookahead) and keep their
    order inside each bucket, so the leftmost part wins exactly as in a plain alternation, but at a
    given position the engine tries a handful of parts instead of all of them (the checker's budget
    is ~1 ms per report; measured on 2,000 IU reports: p50 0.47 ms vs 0.84 ms, p95 0.92 vs 2.2 ms for
    the plain alternation, identical flags). Parts must not contain capturing groups. A property
    test (tests/medvlm/test_knowledge.py) holds it to the plain alternation's matches.
    """
    parser: Any = importlib.import_module("re._parser")  # the stdlib's own regex parser
    firsts: list[set[str] | None] = []
    for part in parts:
        try:
            first = _first_chars(parser.parse(part, flags))
        except (re.error, TypeError, ValueError):
            first = None
        firsts.append(first if first and all(c.isalnum() for c in first) else None)
    letters = sorted({c for f in firsts if f is not None for c in f})
    part_of: list[int] = [-1]
    branches: list[str] = []
    for letter in letters:
        alts = []
        for i, first in enumerate(firsts):
            if first is None or letter in first:
                alts.append(f"({parts[i]})")
                part_of.append(i)
        branches.append(f"(?={re.escape(letter)})(?:{'|'.join(alts)})")
    anywhere = [i for i, f in enumerate(firsts) if f is None]
    if anywhere:
        branches.append("(?:" + "|".join(f"({parts[i]})" for i in anywhere) + ")")
        part_of.extend(anywhere)
    pattern = re.compile(prefix + "(?:" + "|".join(branches) + ")" + suffix, flags)
    return pattern, tuple(part_of)


def _compile_group(fragments: list[tuple[str, str]]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """The term matcher: longer fragments first (longest match); ``concepts[m.lastindex]``."""
    ordered = sorted(fragments, key=lambda f: -len(f[1]))
    pattern, part_of = compile_alternation(
        [frag for _, frag in ordered], prefix=r"(?<![\w-])", suffix=r"(?![\w-])"
    )
    concepts = tuple("" if i < 0 else ordered[i][0] for i in part_of)
    return pattern, concepts


_SIGNIFICANCE_RE = re.compile(
    r"^(?:always|ungraded|grade>=[0-3]|size>=\d+mm|term:[a-z]+|qualifier:[a-z]+)$"
)


def _significance(value: Any, where: str) -> tuple[str, ...]:
    conditions = _strings(value, f"{where}.significant_when")
    bad = [c for c in conditions if not _SIGNIFICANCE_RE.match(c)]
    if bad:
        raise KnowledgeBaseError(
            f"{where}.significant_when has {bad}; use always, ungraded, grade>=N, size>=Nmm, term:WORD or "
            "qualifier:WORD"
        )
    return conditions


def _parse_finding(raw: Any, index: int, source_keys: set[str]) -> Finding:
    if not isinstance(raw, dict):
        raise KnowledgeBaseError(f"findings[{index}] must be a mapping, got {type(raw).__name__}")
    cid = raw.get("id")
    if not isinstance(cid, str) or not _ID_RE.match(cid):
        raise KnowledgeBaseError(
            f"findings[{index}].id {cid!r} is not a snake_case identifier; use e.g. 'pleural_effusion'"
        )
    where = f"finding {cid!r}"
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise KnowledgeBaseError(f"{where} has no 'name'; add a human-readable name")
    try:
        category = Category(str(raw.get("category")))
    except ValueError:
        raise KnowledgeBaseError(
            f"{where} has category {raw.get('category')!r}; use one of {[c.value for c in Category]}"
        ) from None
    attrs = raw.get("attributes")
    if not isinstance(attrs, dict):
        raise KnowledgeBaseError(f"{where} has no 'attributes' mapping; add its visual attributes")
    missing = [
        k for k in ("location", "shape", "density", "laterality", "size_scale") if k not in attrs
    ]
    if missing:
        raise KnowledgeBaseError(f"{where} attributes lack {missing}; every finding needs all five")
    try:
        laterality = LateralityBehaviour(attrs["laterality"])
    except ValueError:
        raise KnowledgeBaseError(
            f"{where} has laterality {attrs['laterality']!r}; "
            f"use one of {[b.value for b in LateralityBehaviour]}"
        ) from None
    synonyms = _strings(raw.get("synonyms"), f"{where}.synonyms")
    if not synonyms:
        raise KnowledgeBaseError(f"{where} has no synonyms; add at least one term")
    for frag in (*synonyms, *_strings(raw.get("normal_phrases"), f"{where}.normal_phrases")):
        try:
            compiled = re.compile(frag)
        except re.error as exc:
            raise KnowledgeBaseError(f"{where} term {frag!r} is not a valid regex: {exc}") from None
        if compiled.groups:
            raise KnowledgeBaseError(f"{where} term {frag!r} has a capturing group; use (?:...)")
    sources = _strings(raw.get("sources"), f"{where}.sources")
    if not sources:
        raise KnowledgeBaseError(
            f"{where} has no sources; cite the glossary or label set it follows"
        )
    unknown = [s for s in sources if s not in source_keys]
    if unknown:
        raise KnowledgeBaseError(
            f"{where} cites unknown sources {unknown}; add them under 'sources'"
        )
    sex = raw.get("sex_specific")
    if sex not in (None, "M", "F"):
        raise KnowledgeBaseError(f"{where} has sex_specific {sex!r}; use 'M', 'F' or leave it out")
    return Finding(
        id=cid,
        name=name,
        category=category,
        synonyms=synonyms,
        normal_phrases=_strings(raw.get("normal_phrases"), f"{where}.normal_phrases"),
        attributes=FindingAttributes(
            location=str(attrs["location"]),
            shape=str(attrs["shape"]),
            density=str(attrs["density"]),
            laterality=laterality,
            size_scale=str(attrs["size_scale"]),
        ),
        sources=sources,
        labels=_strings(raw.get("labels"), f"{where}.labels"),
        covers=frozenset(_strings(raw.get("covers"), f"{where}.covers")),
        implies=frozenset(_strings(raw.get("implies"), f"{where}.implies")),
        excludes=frozenset(_strings(raw.get("excludes"), f"{where}.excludes")),
        acute=bool(raw.get("acute", False)),
        critical=bool(raw.get("critical", False)),
        broad=bool(raw.get("broad", False)),
        acute_when=frozenset(_strings(raw.get("acute_when"), f"{where}.acute_when")),
        significant_when=_significance(raw.get("significant_when"), where),
        side_group=raw.get("side_group"),
        sex_specific=sex,
        radlex=raw.get("radlex"),
    )


def build_knowledge_base(data: Any, source_file: str = "<memory>") -> KnowledgeBase:
    """Validate parsed YAML data and compile the matchers."""
    if not isinstance(data, dict):
        raise KnowledgeBaseError(f"{source_file}: the top level must be a mapping")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise KnowledgeBaseError(f"{source_file}: missing 'version'; every KB file is versioned")
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise KnowledgeBaseError(f"{source_file}: missing 'sources' mapping (key -> citation)")
    raw_findings = data.get("findings")
    if not isinstance(raw_findings, list) or not raw_findings:
        raise KnowledgeBaseError(f"{source_file}: 'findings' must be a non-empty list")
    findings: dict[str, Finding] = {}
    for i, raw in enumerate(raw_findings):
        entry = _parse_finding(raw, i, set(sources))
        if entry.id in findings:
            raise KnowledgeBaseError(f"{source_file}: finding id {entry.id!r} appears twice")
        findings[entry.id] = entry
    for entry in findings.values():
        for rel in ("covers", "implies", "excludes"):
            dangling = sorted(set(getattr(entry, rel)) - set(findings))
            if dangling:
                raise KnowledgeBaseError(
                    f"{source_file}: finding {entry.id!r} {rel} unknown ids {dangling}"
                )
    terms = [(f.id, frag) for f in findings.values() for frag in f.synonyms]
    normals = [(f.id, frag) for f in findings.values() for frag in f.normal_phrases]
    term_pattern, term_concepts = _compile_group(terms)
    normal_pattern, normal_concepts = _compile_group(normals)
    return KnowledgeBase(
        version=version,
        source_file=source_file,
        sources={str(k): str(v) for k, v in sources.items()},
        findings=findings,
        term_pattern=term_pattern,
        normal_pattern=normal_pattern,
        term_concepts=term_concepts,
        normal_concepts=normal_concepts,
    )


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """Load and validate a knowledge-base YAML file (default: the packaged one)."""
    if path is None:
        ref = resources.files("medvlm.prompts").joinpath("data", DEFAULT_KB_FILE)
        text = ref.read_text(encoding="utf-8")
        name = f"medvlm/prompts/data/{DEFAULT_KB_FILE}"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise KnowledgeBaseError(
                f"cannot read knowledge base {p}: {exc.strerror}; pass an existing YAML file"
            ) from None
        name = str(p)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KnowledgeBaseError(f"{name} is not valid YAML: {exc}") from None
    return build_knowledge_base(data, name)
