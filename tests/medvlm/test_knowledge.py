"""The knowledge base: packaged file validity, coverage, validation errors, grounding prompts."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from medvlm.prompts.knowledge import (
    Category,
    KnowledgeBase,
    KnowledgeBaseError,
    build_knowledge_base,
    compile_alternation,
    load_knowledge_base,
)

CHEXPERT_14 = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip
VINDR_LOCAL = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Clavicle fracture",
    "Emphysema", "Enlarged PA", "Lung cavity", "Lung cyst", "Mediastinal shift", "Edema",
)  # fmt: skip


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_knowledge_base()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    path = Path(__file__).resolve().parents[2] / "medvlm/prompts/data/cxr_findings_kb.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def test_packaged_kb_is_versioned_and_large_enough(kb: KnowledgeBase) -> None:
    assert re.fullmatch(r"\d{4}\.\d+\.\d+", kb.version)
    findings = [f for f in kb.findings.values() if f.category is not Category.GENERIC]
    assert len(findings) >= 25
    assert sum(f.is_device for f in findings) >= 5


def test_every_chexpert_and_vindr_label_is_covered(kb: KnowledgeBase) -> None:
    labels = " | ".join(label for f in kb.findings.values() for label in f.labels)
    for name in CHEXPERT_14:
        assert f"CheXpert: {name}" in labels, name
    for name in VINDR_LOCAL:
        assert f"VinDr-CXR: {name}" in labels, name


def test_every_finding_has_attributes_synonyms_and_sources(kb: KnowledgeBase) -> None:
    for f in kb.findings.values():
        assert f.synonyms and f.sources
        if f.category is not Category.GENERIC:
            attrs = f.attributes
            assert all((attrs.location, attrs.shape, attrs.density, attrs.size_scale)), f.id
        for text in kb.source_texts(f.id):
            assert len(text) > 20
        assert f.radlex is None or "RadLex term" in f.radlex  # names, never invented ids


def test_relations_and_matcher(kb: KnowledgeBase) -> None:
    assert kb.covers("no_acute_disease", "pneumothorax")
    assert not kb.covers("no_acute_disease", "cardiomegaly")
    assert kb.covers("lung_opacity", "consolidation")
    assert kb.same_side_group("consolidation", "pneumonia")
    assert not kb.same_side_group("consolidation", "atelectasis")
    m = kb.term_pattern.search("small right pleural effusion")
    assert m is not None and kb.concept_of(m) == "pleural_effusion"
    assert kb.term_pattern.search("pericardial effusion") is not None
    n = kb.term_pattern.search("large pericardial effusion")
    assert n is not None and kb.concept_of(n) == "pericardial_effusion"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("version"), "missing 'version'"),
        (lambda d: d["findings"][3].update(id="Bad Id"), "snake_case"),
        (lambda d: d["findings"][3].update(sources=["nowhere"]), "unknown sources"),
        (lambda d: d["findings"][3].update(synonyms=["(unclosed"]), "not a valid regex"),
        (lambda d: d["findings"][3].update(synonyms=["(capt)ure"]), "capturing group"),
        (lambda d: d["findings"][3]["attributes"].pop("shape"), "attributes lack"),
        (lambda d: d["findings"][3]["attributes"].update(laterality="sideways"), "laterality"),
        (lambda d: d["findings"][3].update(covers=["no_such_finding"]), "covers unknown ids"),
        (lambda d: d["findings"].append(copy.deepcopy(d["findings"][3])), "appears twice"),
        (lambda d: d["findings"][3].update(category="thing"), "category"),
    ],
)
def test_validation_names_the_problem(raw: dict[str, Any], mutate: Any, message: str) -> None:
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(KnowledgeBaseError, match=message):
        build_knowledge_base(data, "test.yaml")


def test_bucketed_alternation_keeps_leftmost_priority() -> None:
    parts = ["no", "no longer", "(?:is|are) not seen", "[0-9]+ cm", "not"]
    pattern, part_of = compile_alternation(parts, prefix=r"\b", suffix=r"\b")
    found = [(m.group(0), parts[part_of[m.lastindex or 0]]) for m in pattern.finditer(
        "No longer there; it is not seen, 12 cm, not"
    )]  # fmt: skip
    assert found == [("No", "no"), ("is not seen", "(?:is|are) not seen"), ("12 cm", "[0-9]+ cm"),
                     ("not", "not")]  # fmt: skip


def _plain_matches(
    parts: list[str], text: str, prefix: str, suffix: str
) -> list[tuple[int, int, int]]:
    plain = re.compile(
        prefix + "(?:" + "|".join(f"({p})" for p in parts) + ")" + suffix, re.IGNORECASE
    )
    return [(m.start(), m.end(), (m.lastindex or 0) - 1) for m in plain.finditer(text)]


def _bucketed_matches(
    parts: list[str], text: str, prefix: str, suffix: str
) -> list[tuple[int, int, int]]:
    pattern, part_of = compile_alternation(parts, prefix=prefix, suffix=suffix)
    return [(m.start(), m.end(), part_of[m.lastindex or 0]) for m in pattern.finditer(text)]


_WORDS = ["no", "not", "non", "left", "lung", "lungs", "upper lobe", "-", " ", "a", "ab", "b"]
_PART_WORDS = ["no", "not", "non", "left", "lung", "lungs", "upper lobe", "a", "ab", "b"]
_PART = st.one_of(
    st.lists(st.sampled_from(_PART_WORDS), min_size=1, max_size=3).map(" ".join),
    st.sampled_from(
        ["(?:is|are) not", "[0-9]+ cm", "lungs?", "(?:left|right) lung", r"\d+", "x*y", "(?:a|)b"]
    ),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    parts=st.lists(_PART, min_size=1, max_size=8),
    words=st.lists(
        st.sampled_from([*_WORDS, "12 cm", "IS NOT", "Left Lung", "xy", "y"]), max_size=25
    ),
    bounded=st.booleans(),
)
def test_bucketed_alternation_matches_the_plain_alternation(
    parts: list[str], words: list[str], bounded: bool
) -> None:
    """Property (issue 9, item 6): same matches, same spans, same winning part as the plain
    ``(?:(p0)|(p1)|...)`` it speeds up (about 2x on IU reports: p50 0.47 vs 0.84 ms)."""
    text = "".join(words)
    prefix, suffix = (r"(?<![\w-])", r"(?![\w-])") if bounded else ("", "")
    assert _bucketed_matches(parts, text, prefix, suffix) == _plain_matches(
        parts, text, prefix, suffix
    )


def test_real_term_and_cue_lists_match_the_plain_alternation() -> None:
    from medvlm.reports import context

    kb = load_knowledge_base()
    text = (
        "No pleural effusion or pneumothorax. Left lower lobe opacity, likely atelectasis; "
        "cannot exclude pneumonia. Unchanged cardiomegaly. Right-sided PICC tip in the SVC. "
        "Small bilateral effusions are not seen; no longer visible. Mild pulmonary edema."
    )
    terms = sorted({t for f in kb.findings.values() for t in f.synonyms}, key=len, reverse=True)
    cues = [frag for frag, _, _ in context._CUE_TABLE]
    prefix, suffix = r"(?<![\w-])", r"(?![\w-])"
    for parts in (terms, cues):
        found = _bucketed_matches(parts, text, prefix, suffix)
        assert found and found == _plain_matches(parts, text, prefix, suffix)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="cannot read knowledge base"):
        load_knowledge_base(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("findings: [unclosed")
    with pytest.raises(KnowledgeBaseError, match="not valid YAML"):
        load_knowledge_base(bad)
