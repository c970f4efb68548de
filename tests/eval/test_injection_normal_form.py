"""Injected findings stay in medvlm's normal form, and sentence indices mean what the checker's do.

Regression for `eval run --corpus iu --n 3000 --seed 3`: an insertion after the last sentence of a
findings text that ends in punctuation debris ("... abnormality. .") left a double space and a
sentence glued to the previous one, and ``eval.checker.split_sentences`` refused the text.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.checker import (
    check_row,
    default_checker,
    normalize_findings,
    sections_of,
    split_sentences,
)
from eval.errors import EvalError
from eval.injection import Edit, InjectionConfig, _renormalize, _State, inject_corpus
from eval.records import LabelledRow, ReportRecord
from medvlm.checking import Checker
from medvlm.reports import ParsedReport, SectionName
from medvlm.taxonomy import ComplexClass, ErrorSubtype

INSERT_ONLY = InjectionConfig(p_original=0.0, subtypes=(ErrorSubtype.INSERT_FINDING,))


def _rows(records, config: InjectionConfig) -> list[dict]:
    return list(
        inject_corpus(
            records,
            config,
            split=split_sentences,
            sections_of=sections_of,
            normalize=normalize_findings,
        )
    )


def _assert_consistent(row: dict, checker: Checker | None = None) -> None:
    """The row's findings are the checker's text; its indices are the checker's sentences."""
    findings = row["findings"]
    section = ParsedReport.from_sections(findings=findings).section(SectionName.FINDINGS)
    assert section is not None
    assert section.text == findings, "findings are not in medvlm's normal form"
    assert [(s.start, s.end) for s in section.sentences] == split_sentences(findings)
    for edit in row["edits"]:
        if edit["span"] is None or edit["subtype"] == ErrorSubtype.HEADER_MISMATCH.value:
            continue
        start, end = edit["span"]
        assert findings[start:end] == edit["after"]
        sentence = section.sentences[edit["sentence_index"]]
        assert sentence.start <= start < sentence.end
        if edit["subtype"] == ErrorSubtype.INSERT_FINDING.value:
            assert sentence.text == edit["after"], "the inserted finding is not its own sentence"
    if row["edits"] and row["span"] is not None and row["subtype"] != "header_mismatch":
        assert row["sentence_index"] == row["edits"][0]["sentence_index"]
    if checker is not None:
        labelled = LabelledRow(
            id=row["id"],
            label_simple=row["label_simple"],
            label_complex=ComplexClass(row["label_complex"]),
            findings=findings,
            impression=row["impression"],
            header=row["header"],
        )
        for flag in check_row(checker, labelled)["flags"]:
            if flag["section"] != "findings" or flag["sentence_index"] is None:
                continue
            sentence = section.sentences[flag["sentence_index"]]
            if flag["start"] is not None:
                assert sentence.start <= flag["start"] < sentence.end, flag


def test_insertion_after_trailing_debris_keeps_normal_form() -> None:
    # The shape of the IU report that broke the seed-3 run (synthetic text, not IU's).
    record = ReportRecord(
        id="R1",
        findings="The heart is normal in size. The lungs are clear. No acute abnormality. .",
        impression="Normal chest.",
    )
    at_end = []
    for seed in range(40):
        (row,) = _rows([record], replace(INSERT_ONLY, seed=seed))
        _assert_consistent(row)
        if row["sentence_index"] == 3:
            at_end.append(row)
    assert at_end, "no seed put the insertion after the last sentence"
    for row in at_end:
        sentence = row["edits"][0]["after"]
        prefix = "The heart is normal in size. The lungs are clear. No acute abnormality."
        assert row["findings"] == f"{prefix} {sentence} ."
        assert "  " not in row["findings"]


def test_insertion_never_glues_onto_an_unterminated_last_sentence() -> None:
    # Without a full stop (or after a final abbreviation) a sentence put after the last one would
    # merge with it in the checker's split; the injector inserts elsewhere instead.
    for findings in ("Heart size normal. Lungs are clear", "Heart size normal. Clips, wires etc."):
        record = ReportRecord(id="R2", findings=findings)
        for seed in range(20):
            (row,) = _rows([record], replace(INSERT_ONLY, seed=seed))
            _assert_consistent(row)
            assert row["sentence_index"] in (0, 1)
            assert len(split_sentences(row["findings"])) == 3


def test_whitespace_left_by_an_edit_is_repaired_and_spans_follow() -> None:
    text = "No pneumothorax.  There is a small left effusion. "
    state = _State(text=text, sentences=[])
    state.edits.append(Edit(ErrorSubtype.LATERALITY, "right", "left", (35, 39)))
    _renormalize(state, normalize_findings)
    assert state.text == "No pneumothorax. There is a small left effusion."
    assert state.edits[0].span == (34, 38) and state.text[34:38] == "left"
    # Anything beyond whitespace is an edit bug, reported as such rather than silently "fixed".
    with pytest.raises(EvalError, match="more than whitespace"):
        _renormalize(_State(text="No effusion\n\nLungs clear", sentences=[]), normalize_findings)


_SENTENCES = (
    "The heart is normal in size.",
    "There is a small left pleural effusion.",
    "No pneumothorax.",
    "There is no focal consolidation.",
    "A 2.5 cm nodule is seen in the right upper lobe.",
    "Mild degenerative changes of the thoracic spine.",
    "Stable moderate cardiomegaly.",
    "Interval increase in right basilar opacity.",
    "Lungs are clear without effusion.",
    "Surgical clips, wires etc.",
    "1. Endotracheal tube 4 cm above the carina.",
    "Negative for pneumothorax.",
    "Calcified granuloma in the left lung base.",
    "A new right apical opacity is seen.",
)
_ENDINGS = ("", " .", " -", "..", ".")
_JOINERS = (" ", "  ", "\n", " \n ")


@st.composite
def _reports(draw: st.DrawFn) -> list[ReportRecord]:
    out = []
    for number in range(draw(st.integers(1, 3))):
        parts = draw(st.lists(st.sampled_from(_SENTENCES), min_size=1, max_size=5))
        text = parts[0]
        for part in parts[1:]:
            text += draw(st.sampled_from(_JOINERS)) + part
        if draw(st.booleans()):
            text = text.rstrip(".")  # an unterminated last sentence
        text += draw(st.sampled_from(_ENDINGS))
        header = {"patient_sex": "M"} if draw(st.booleans()) else None
        out.append(ReportRecord(id=f"H{number}", findings=text, indication="Male.", header=header))
    return out


_CHECKER = default_checker()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=_reports(),
    seed=st.integers(0, 10_000),
    errors=st.integers(1, 2),
    p_original=st.sampled_from((0.0, 0.5)),
)
def test_injection_always_agrees_with_the_checkers_sentence_indices(
    records: list[ReportRecord], seed: int, errors: int, p_original: float
) -> None:
    config = InjectionConfig(seed=seed, p_original=p_original, errors_per_report=errors)
    rows = _rows(records, config)
    assert len(rows) == len(records)
    for row in rows:
        _assert_consistent(row, _CHECKER)
        json.dumps(row)  # stays serialisable
