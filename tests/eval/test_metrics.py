"""Metrics against hand-computed values (8 rows worked out on paper in the comments)."""

from __future__ import annotations

import pytest

from eval.errors import MetricsError
from eval.metrics import BootstrapConfig, compare_metrics, compute_metrics, flatten_values
from eval.predictions import Prediction
from eval.records import LabelledRow
from medvlm.taxonomy import ComplexClass, ErrorSubtype

ORIG, INS, REM, SUB = (ComplexClass.ORIGINAL, ComplexClass.INSERT, ComplexClass.REMOVE,
                       ComplexClass.SUBSTITUTE)  # fmt: skip


def _row(rid: str, cls: ComplexClass, subtype: ErrorSubtype | None = None, sent: int | None = None):
    return LabelledRow(
        id=rid,
        label_simple="N" if cls is ORIG else "Y",
        label_complex=cls,
        findings="x.",
        subtype=subtype,
        sentence_index=sent,
    )


def _flag(subtype: str, sentence: int, section: str = "findings") -> dict[str, object]:
    return {"subtype": subtype, "section": section, "sentence_index": sentence, "confidence": 0.9}


def _pred(rid: str, cls: ComplexClass, flags=(), unparseable: int = 0) -> Prediction:
    return Prediction(rid, "N" if cls is ORIG else "Y", cls, tuple(flags), unparseable)


ROWS = [
    _row("1", INS, ErrorSubtype.INSERT_FINDING, 2),
    _row("2", REM, ErrorSubtype.REMOVE_FINDING, None),
    _row("3", SUB, ErrorSubtype.LATERALITY, 1),
    _row("4", SUB, ErrorSubtype.NEGATION, 0),
    _row("5", ORIG),
    _row("6", ORIG),
    _row("7", ORIG),
    _row("8", ORIG),
]
PREDS = [
    _pred("1", INS, [_flag("insert_finding", 2)]),
    _pred("2", ORIG),
    _pred("3", SUB, [_flag("laterality", 1)]),
    _pred("4", INS, [_flag("insert_finding", 2)]),
    _pred("5", ORIG),
    _pred("6", SUB, [_flag("negation", 0), _flag("severity", 1, "impression")]),
    _pred("7", SUB, [_flag("laterality", 0)]),
    _pred("8", ORIG, unparseable=2),
]


def _v(tree, dotted: str) -> float:
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node["value"]


@pytest.fixture(scope="module")
def metrics():
    return compute_metrics(ROWS, list(reversed(PREDS)), BootstrapConfig(resamples=200, seed=1))


def test_simple_metrics_match_hand_computation(metrics) -> None:
    # tp = rows 1,3,4; fn = row 2; fp = rows 6,7; tn = rows 5,8
    assert metrics["simple"]["counts"] == {"tp": 3, "fn": 1, "fp": 2, "tn": 2}
    assert _v(metrics, "simple.accuracy") == 0.625  # 5/8
    assert _v(metrics, "simple.precision") == 0.6  # 3/5
    assert _v(metrics, "simple.recall") == 0.75  # 3/4
    assert _v(metrics, "simple.f1") == 0.666667  # 2*.6*.75/1.35
    assert _v(metrics, "simple.specificity") == 0.5  # 2/4
    assert _v(metrics, "simple.balanced_accuracy") == 0.625


def test_complex_metrics_match_hand_computation(metrics) -> None:
    cm = metrics["complex"]["confusion_matrix"]
    assert cm["labels"] == ["original", "insert", "remove", "substitute"]
    assert cm["rows_true_cols_pred"] == [[2, 0, 0, 2], [0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1]]
    assert _v(metrics, "complex.accuracy") == 0.5
    per = metrics["complex"]["per_class"]
    assert per["original"]["precision"]["value"] == 0.666667  # 2/3
    assert per["original"]["recall"]["value"] == 0.5
    assert per["original"]["f1"]["value"] == 0.571429
    assert per["insert"]["f1"]["value"] == 0.666667  # p 1/2, r 1
    assert per["remove"]["f1"]["value"] == 0.0
    assert per["substitute"]["f1"]["value"] == 0.4  # p 1/3, r 1/2
    assert per["substitute"]["support"] == 2
    assert _v(metrics, "complex.macro_f1") == 0.409524  # (4/7 + 2/3 + 0 + 2/5) / 4


def test_detection_localisation_false_flags_unparseable(metrics) -> None:
    det = metrics["detection"]
    assert det["insert_finding"]["rate"]["value"] == 1.0
    assert det["remove_finding"]["rate"]["value"] == 0.0
    assert det["negation"]["rate"]["value"] == 1.0
    assert det["negation"]["typed_rate"]["value"] == 0.0  # flagged, but as insert_finding
    assert det["laterality"]["typed_rate"]["value"] == 1.0
    assert det["laterality"]["n"] == 1
    assert "severity" not in det  # no rows of that subtype
    assert metrics["localisation"]["n"] == 3  # rows 1, 3, 4
    assert _v(metrics, "localisation.hit_rate") == 0.666667  # rows 1 and 3 hit, row 4 misses
    assert _v(metrics, "false_flags.per_clean_report") == 0.75  # (0 + 2 + 1 + 0) / 4
    assert _v(metrics, "false_flags.clean_reports_with_any_flag") == 0.5
    assert _v(metrics, "unparseable.row_rate") == 0.125
    assert metrics["unparseable"]["total"] == 2


def test_bootstrap_is_seeded_and_brackets_the_value(metrics) -> None:
    again = compute_metrics(ROWS, PREDS, BootstrapConfig(resamples=200, seed=1))
    assert again == metrics
    other = compute_metrics(ROWS, PREDS, BootstrapConfig(resamples=200, seed=2))
    cis = [metrics["simple"][k]["ci95"] for k in ("precision", "recall", "f1", "specificity")]
    assert [other["simple"][k]["ci95"] for k in ("precision", "recall", "f1", "specificity")] != cis
    for key in ("accuracy", "f1", "recall"):
        lo, hi = metrics["simple"][key]["ci95"]
        assert 0.0 <= lo <= metrics["simple"][key]["value"] <= hi <= 1.0
    assert metrics["bootstrap"] == {"resamples": 200, "seed": 1, "level": 0.95}


def test_perfect_predictions_have_degenerate_ci() -> None:
    perfect = [Prediction(r.id, r.label_simple, r.label_complex, (), 0) for r in ROWS]
    m = compute_metrics(ROWS, perfect, BootstrapConfig(resamples=50))
    assert m["simple"]["accuracy"] == {"value": 1.0, "ci95": [1.0, 1.0]}
    assert m["complex"]["macro_f1"]["value"] == 1.0


def test_no_bootstrap_gives_null_ci() -> None:
    m = compute_metrics(ROWS, PREDS, BootstrapConfig(resamples=0))
    assert m["simple"]["accuracy"] == {"value": 0.625, "ci95": None}


def test_missing_prediction_is_an_error() -> None:
    with pytest.raises(MetricsError, match="1 rows have no prediction"):
        compute_metrics(ROWS, PREDS[:-1], BootstrapConfig(resamples=0))


def test_compare_gives_absolute_and_relative_differences(metrics) -> None:
    perfect = [Prediction(r.id, r.label_simple, r.label_complex, (), 0) for r in ROWS]
    b = compute_metrics(ROWS, perfect, BootstrapConfig(resamples=0))
    diff = compare_metrics(metrics, b)["metrics"]
    assert diff["simple.accuracy"] == {"a": 0.625, "b": 1.0, "abs_diff": 0.375, "rel_diff": 0.6}
    assert diff["detection.remove_finding.rate"]["rel_diff"] is None  # a = 0
    assert "simple.accuracy" in flatten_values(b)
