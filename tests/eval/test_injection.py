"""Seeded injection: determinism, order independence, and that each subtype edits what it says."""

from __future__ import annotations

import json
import random
import re

import pytest

from eval.checker import normalize_findings, sections_of, split_sentences
from eval.errors import EvalError
from eval.injection import TEXT_SUBTYPES, InjectionConfig, inject_corpus
from eval.records import ReportRecord
from eval.rules import INSERT_CANDIDATES, is_positive_finding
from medvlm.reports import ParsedReport, SectionName
from medvlm.taxonomy import COMPLEX_CLASS_OF, ErrorSubtype


def _dataset(records, config: InjectionConfig, n: int | None = None) -> str:
    rows = inject_corpus(
        records,
        config,
        split=split_sentences,
        sections_of=sections_of,
        normalize=normalize_findings,
        n=n,
    )
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def _only(records, subtype: ErrorSubtype, seed: int = 0) -> list[dict]:
    text = _dataset(records, InjectionConfig(seed=seed, p_original=0.0, subtypes=(subtype,)))
    return [json.loads(line) for line in text.splitlines() if json.loads(line)["edits"]]


def test_same_seed_gives_byte_identical_dataset_in_any_corpus_order(records) -> None:
    config = InjectionConfig(seed=7)
    first = _dataset(records, config)
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    assert _dataset(shuffled, config) == first
    assert _dataset(list(reversed(records)), config) == first
    assert _dataset(records, InjectionConfig(seed=8)) != first


def test_choice_of_n_reports_is_order_independent(records) -> None:
    config = InjectionConfig(seed=1)
    picked = _dataset(records, config, n=4)
    assert _dataset(list(reversed(records)), config, n=4) == picked
    assert len(picked.splitlines()) == 4
    with pytest.raises(EvalError, match="only 8 have a FINDINGS section"):
        _dataset(records, config, n=9)


def test_labels_and_originals(records) -> None:
    rows = [json.loads(x) for x in _dataset(records * 1, InjectionConfig(seed=0)).splitlines()]
    for row in rows:
        if row["label_simple"] == "N":
            assert row["label_complex"] == "original"
            assert row["findings"] == row["original_findings"]
            assert row["subtype"] is None and row["sentence_index"] is None
        else:
            assert row["label_complex"] == COMPLEX_CLASS_OF[ErrorSubtype(row["subtype"])].value
            assert (
                row["findings"] != row["original_findings"] or row["subtype"] == "header_mismatch"
            )
        assert row["seed"] == 0
    all_original = _dataset(records, InjectionConfig(p_original=1.0))
    assert all(json.loads(x)["label_simple"] == "N" for x in all_original.splitlines())


def _check_span(row: dict) -> str:
    """The span holds the new text and lies in the sentence the checker numbers sentence_index."""
    start, end = row["span"]
    assert row["findings"][start:end] == row["edits"][0]["after"]
    parsed = ParsedReport.from_sections(findings=row["findings"])
    section = parsed.section(SectionName.FINDINGS)
    assert section is not None and section.text == row["findings"]
    sentence = section.sentences[row["sentence_index"]]
    assert sentence.start <= start < sentence.end
    return sentence.text


WORD_SWAPS = {
    ErrorSubtype.LATERALITY: ({"left", "right", "bilateral"}, {"left", "right"}),
    ErrorSubtype.SEVERITY: (
        {"mild", "moderate", "severe", "small", "large", "minimal", "marked", "tiny", "trace"},
        {"mild", "moderate", "severe", "small", "large", "extensive", "minimal"},
    ),
    ErrorSubtype.LOCATION: (
        {"upper", "lower", "apex", "base", "apical", "basilar", "bibasilar", "bases", "apices"},
        {"upper", "lower", "apex", "base", "apical", "basilar", "biapical", "bases", "apices"},
    ),
    ErrorSubtype.INTERVAL: (
        {"new", "a new", "unchanged", "stable", "increased", "decreased", "improved", "worsened"},
        {"unchanged", "an unchanged", "a chronic", "chronic", "increased", "decreased",
         "worsened", "improved"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("subtype", list(WORD_SWAPS))
def test_word_substitutions_swap_the_word_class(records, subtype: ErrorSubtype) -> None:
    rows = _only(records, subtype)
    assert len(rows) >= 2
    before_ok, after_ok = WORD_SWAPS[subtype]
    for row in rows:
        edit = row["edits"][0]
        before, after = (re.sub(r"^an? ", "", edit[k].lower()) for k in ("before", "after"))
        assert before in before_ok and after in after_ok
        assert before != after
        assert row["label_complex"] == "substitute" and row["subtype"] == subtype.value
        sentence = _check_span(row)
        assert not re.search(r"\bno\b", sentence, re.IGNORECASE)  # affirmed sentences only


def test_negation_flips_presence(records) -> None:
    rows = _only(records, ErrorSubtype.NEGATION)
    assert len(rows) >= 4
    for row in rows:
        edit = row["edits"][0]
        negated_before = re.search(r"\b(no|without|negative)\b", edit["before"], re.IGNORECASE)
        negated_after = re.search(r"\b(no|not|without|negative)\b", edit["after"], re.IGNORECASE)
        assert bool(negated_before) != bool(negated_after), edit
        _check_span(row)


def test_measurement_changes_number_or_unit(records) -> None:
    rows = _only(records, ErrorSubtype.MEASUREMENT)
    assert {r["id"] for r in rows} == {"S002", "S008"}  # "2.5 cm" and "4 cm"
    for row in rows:
        before, after = row["edits"][0]["before"], row["edits"][0]["after"]
        assert re.fullmatch(r"\d+(\.\d+)? ?(mm|cm)", after) and after != before
        _check_span(row)


def test_insert_adds_a_new_finding_sentence(records) -> None:
    rows = _only(records, ErrorSubtype.INSERT_FINDING)
    assert len(rows) == len(records)  # always possible
    candidates = {c.sentence for c in INSERT_CANDIDATES}
    for row in rows:
        sentence = _check_span(row)
        assert sentence == row["edits"][0]["after"] and sentence in candidates
        assert (
            len(split_sentences(row["findings"]))
            == len(split_sentences(row["original_findings"])) + 1
        )
        assert row["label_complex"] == "insert"


def test_remove_drops_a_positive_finding_sentence(records) -> None:
    rows = _only(records, ErrorSubtype.REMOVE_FINDING)
    assert len(rows) >= 4
    for row in rows:
        removed = row["edits"][0]["before"]
        assert is_positive_finding(removed)
        assert removed in row["original_findings"] and removed not in row["findings"]
        assert (
            len(split_sentences(row["findings"]))
            == len(split_sentences(row["original_findings"])) - 1
        )
        start, end = row["edits"][0]["removed_span"]
        assert row["original_findings"][start:end] == removed
        assert row["sentence_index"] is None and row["label_complex"] == "remove"
    # "Lungs are clear. No ... Stable moderate cardiomegaly." has one positive sentence
    s003 = next(r for r in rows if r["id"] == "S003")
    assert s003["edits"][0]["before"] == "Stable moderate cardiomegaly."


def test_header_mismatch_flips_the_header_sex(records) -> None:
    rows = _only(records, ErrorSubtype.HEADER_MISMATCH)
    assert [r["id"] for r in rows] == ["S006"]  # the only report with a header
    row = rows[0]
    assert row["original_header"]["patient_sex"] == "M" and row["header"]["patient_sex"] == "F"
    assert row["findings"] == row["original_findings"]
    assert row["label_complex"] == "substitute"


def test_several_errors_per_report_keep_one_class_and_valid_spans(records) -> None:
    config = InjectionConfig(seed=2, p_original=0.0, errors_per_report=2, subtypes=TEXT_SUBTYPES)
    rows = [json.loads(x) for x in _dataset(records, config).splitlines()]
    assert any(len(r["edits"]) == 2 for r in rows)
    for row in rows:
        classes = {COMPLEX_CLASS_OF[ErrorSubtype(e["subtype"])] for e in row["edits"]}
        assert len(classes) == 1
        for edit in row["edits"]:
            if edit["span"]:
                start, end = edit["span"]
                assert row["findings"][start:end] == edit["after"]


def test_duplicate_ids_and_bad_config_are_refused(records) -> None:
    with pytest.raises(EvalError, match="duplicate report id 'S001'"):
        _dataset([*records, records[0]], InjectionConfig())
    with pytest.raises(EvalError, match=r"p_original must be in \[0, 1\]"):
        InjectionConfig(p_original=1.5)


def test_raw_text_reports_are_split_into_sections() -> None:
    raw = ReportRecord(
        id="T1",
        text="FINAL REPORT\nFINDINGS: There is a small right pleural effusion.\n"
        "The heart is normal.\n\nIMPRESSION: Small right effusion.\n",
    )
    rows = _only([raw], ErrorSubtype.LATERALITY)
    assert rows[0]["original_findings"].startswith("There is a small right pleural effusion.")
    assert rows[0]["impression"] == "Small right effusion."
    assert "left" in rows[0]["findings"]


def test_articles_and_verbs_stay_grammatical() -> None:
    from eval.rules import SUBSTITUTION_RULES, fix_article

    assert fix_article("There is a ", "18 mm") == (2, "an 18 mm")
    assert fix_article("There is an ", "small") == (3, "a small")
    assert fix_article("An ", "Lower") == (3, "A Lower")
    assert fix_article("the ", "upper") == (0, "upper")
    unnegate = SUBSTITUTION_RULES[1]
    for text, verb in (
        ("No pleural effusions or pneumothoraces.", "There are "),
        ("No focal consolidation.", "There is "),
    ):
        match = unnegate.pattern.search(text)
        assert match is not None and unnegate.alternatives(match) == [verb]
    row = _only(
        [ReportRecord(id="A1", findings="There is a 6 mm nodule. The heart is normal.")],
        ErrorSubtype.MEASUREMENT,
        seed=3,
    )[0]
    start, end = row["span"]
    assert row["findings"][start:end] == row["edits"][0]["after"]
    assert re.search(r"\b(a [^8aeiou]|an (8|11|18))", row["findings"][: end + 1])
