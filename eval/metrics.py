"""Metrics with seeded bootstrap confidence intervals, implemented with numpy.

Conventions: SIMPLE positive class is ``Y`` (the report has an error). A ratio with a zero
denominator is 0.0 (scikit-learn's ``zero_division=0``). COMPLEX macro-F1 averages over the classes
that occur in the labels or the predictions. Per-subtype detection is the share of rows with that
injected subtype that the checker called erroneous (``rate``); ``typed_rate`` also requires a
flag of that subtype. Localisation counts rows whose label names a findings sentence (removals
have none): a hit is a flag on that findings sentence. CIs are percentile intervals over
``resamples`` bootstrap resamples of rows, drawn with ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from eval.errors import MetricsError
from eval.predictions import Prediction
from eval.records import JSONDict, LabelledRow
from medvlm.taxonomy import ComplexClass, ErrorSubtype

CLASSES: tuple[ComplexClass, ...] = tuple(ComplexClass)
DIGITS = 6
SCHEMA = "radcheck-eval-metrics/1"

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class BootstrapConfig:
    """How confidence intervals are drawn."""

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 0:
            raise MetricsError(f"bootstrap resamples must be >= 0, got {self.resamples}")
        if not 0.0 < self.level < 1.0:
            raise MetricsError(f"CI level must be in (0, 1), got {self.level}")


def safe_div(num: float, den: float) -> float:
    """``num / den``, 0.0 when ``den`` is 0."""
    return float(num) / float(den) if den else 0.0


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean, 0.0 when both are 0."""
    return safe_div(2 * precision * recall, precision + recall)


@dataclass(frozen=True, slots=True)
class _Arrays:
    true_y: BoolArray
    pred_y: BoolArray
    true_c: IntArray
    pred_c: IntArray
    subtype: IntArray
    typed: BoolArray
    loc_mask: BoolArray
    loc_hit: BoolArray
    n_flags: IntArray
    unparseable: IntArray


def _align(rows: Sequence[LabelledRow], preds: Sequence[Prediction]) -> _Arrays:
    if not rows:
        raise MetricsError("no rows to score; the dataset is empty")
    by_id = {p.id: p for p in preds}
    missing = [r.id for r in rows if r.id not in by_id]
    if missing:
        raise MetricsError(
            f"{len(missing)} rows have no prediction (first: {missing[0]!r}); rerun the runner"
        )
    subtypes = list(ErrorSubtype)
    ordered = [by_id[r.id] for r in rows]
    typed = [
        r.subtype is not None and any(f.get("subtype") == r.subtype.value for f in p.flags)
        for r, p in zip(rows, ordered, strict=True)
    ]
    loc_mask = [r.is_error and r.sentence_index is not None for r in rows]
    loc_hit = [
        m and r.sentence_index is not None and p.points_at(r.sentence_index)
        for m, r, p in zip(loc_mask, rows, ordered, strict=True)
    ]
    return _Arrays(
        true_y=np.array([r.is_error for r in rows], dtype=bool),
        pred_y=np.array([p.pred_simple == "Y" for p in ordered], dtype=bool),
        true_c=np.array([CLASSES.index(r.label_complex) for r in rows], dtype=np.int64),
        pred_c=np.array([CLASSES.index(p.pred_complex) for p in ordered], dtype=np.int64),
        subtype=np.array(
            [
                subtypes.index(r.subtype) if r.subtype is not None and r.is_error else -1
                for r in rows
            ],
            dtype=np.int64,
        ),
        typed=np.array(typed, dtype=bool),
        loc_mask=np.array(loc_mask, dtype=bool),
        loc_hit=np.array(loc_hit, dtype=bool),
        n_flags=np.array([len(p.flags) for p in ordered], dtype=np.int64),
        unparseable=np.array([p.unparseable_answers for p in ordered], dtype=np.int64),
    )


def _rate(hits: BoolArray, mask: BoolArray) -> float:
    den = int(mask.sum())
    return float((hits & mask).sum()) / den if den else float("nan")


def _point_metrics(a: _Arrays, idx: IntArray, classes: Sequence[int]) -> dict[str, float]:
    ty, py = a.true_y[idx], a.pred_y[idx]
    tp = float((ty & py).sum())
    fp = float((~ty & py).sum())
    tn = float((~ty & ~py).sum())
    fn = float((ty & ~py).sum())
    precision = safe_div(tp, tp + fp)
    recall = safe_div(tp, tp + fn)
    specificity = safe_div(tn, tn + fp)
    out = {
        "simple.accuracy": safe_div(tp + tn, len(idx)),
        "simple.precision": precision,
        "simple.recall": recall,
        "simple.f1": f1_score(precision, recall),
        "simple.specificity": specificity,
        "simple.balanced_accuracy": (recall + specificity) / 2,
    }
    tc, pc = a.true_c[idx], a.pred_c[idx]
    counts = np.bincount(tc * len(CLASSES) + pc, minlength=len(CLASSES) ** 2)
    cm = counts.reshape(len(CLASSES), len(CLASSES))
    f1s = []
    for k in classes:
        name = CLASSES[k].value
        p_k = safe_div(cm[k, k], cm[:, k].sum())
        r_k = safe_div(cm[k, k], cm[k, :].sum())
        f_k = f1_score(p_k, r_k)
        out[f"complex.per_class.{name}.precision"] = p_k
        out[f"complex.per_class.{name}.recall"] = r_k
        out[f"complex.per_class.{name}.f1"] = f_k
        f1s.append(f_k)
    out["complex.accuracy"] = safe_div(float(np.trace(cm)), len(idx))
    out["complex.macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    st = a.subtype[idx]
    for k, subtype in enumerate(ErrorSubtype):
        mask = st == k
        out[f"detection.{subtype.value}.rate"] = _rate(a.pred_y[idx], mask)
        out[f"detection.{subtype.value}.typed_rate"] = _rate(a.typed[idx], mask)
    lm, lh = a.loc_mask[idx], a.loc_hit[idx]
    out["localisation.hit_rate"] = _rate(lh, lm)
    out["localisation.hit_rate_given_detected"] = _rate(lh, lm & a.pred_y[idx])
    clean = ~ty
    n_clean = int(clean.sum())
    flags = a.n_flags[idx]
    out["false_flags.per_clean_report"] = (
        float(flags[clean].sum()) / n_clean if n_clean else float("nan")
    )
    out["false_flags.clean_reports_with_any_flag"] = _rate(flags > 0, clean)
    out["unparseable.row_rate"] = safe_div(float((a.unparseable[idx] > 0).sum()), len(idx))
    out["unparseable.per_report"] = safe_div(float(a.unparseable[idx].sum()), len(idx))
    return out


def _round(value: float) -> float | None:
    if np.isnan(value):
        return None
    rounded = round(float(value), DIGITS)
    return 0.0 if rounded == 0 else rounded


def _nest(flat: Mapping[str, Any]) -> JSONDict:
    tree: JSONDict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _bootstrap(
    point: Callable[[IntArray], dict[str, float]], n: int, config: BootstrapConfig
) -> dict[str, tuple[float, float]]:
    if config.resamples == 0:
        return {}
    rng = np.random.default_rng(config.seed)
    samples: dict[str, list[float]] = {}
    for _ in range(config.resamples):
        idx = rng.integers(0, n, size=n)
        for key, value in point(idx).items():
            samples.setdefault(key, []).append(value)
    alpha = (1.0 - config.level) / 2 * 100
    cis: dict[str, tuple[float, float]] = {}
    for key, values in samples.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[~np.isnan(arr)]
        if arr.size:
            lo, hi = np.percentile(arr, [alpha, 100 - alpha])
            cis[key] = (float(lo), float(hi))
    return cis


def compute_metrics(
    rows: Sequence[LabelledRow],
    preds: Sequence[Prediction],
    bootstrap: BootstrapConfig | None = None,
    info: Mapping[str, Any] | None = None,
) -> JSONDict:
    """All metrics as a JSON-ready tree; every rate is ``{"value": x, "ci95": [lo, hi]}``.

    ``info`` (dataset hash, runner description) is copied under ``"run"``. The result holds no
    timestamps and rounds floats to 6 digits, so the same inputs give byte-identical JSON.
    """
    config = bootstrap or BootstrapConfig()
    arrays = _align(rows, preds)
    n = len(rows)
    present = sorted(set(arrays.true_c.tolist()) | set(arrays.pred_c.tolist()))

    def point(idx: IntArray) -> dict[str, float]:
        return _point_metrics(arrays, idx, present)

    values = point(np.arange(n, dtype=np.int64))
    cis = _bootstrap(point, n, config)
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if np.isnan(value):
            continue  # e.g. a subtype with no rows
        ci = cis.get(key)
        flat[key] = {
            "value": _round(value),
            "ci95": [_round(ci[0]), _round(ci[1])] if ci else None,
        }
    tree = _nest(flat)
    ty, py = arrays.true_y, arrays.pred_y
    tree["simple"]["counts"] = {
        "tp": int((ty & py).sum()),
        "fp": int((~ty & py).sum()),
        "tn": int((~ty & ~py).sum()),
        "fn": int((ty & ~py).sum()),
    }
    counts = np.bincount(
        arrays.true_c * len(CLASSES) + arrays.pred_c, minlength=len(CLASSES) ** 2
    ).reshape(len(CLASSES), len(CLASSES))
    tree["complex"]["classes"] = [CLASSES[k].value for k in present]
    tree["complex"]["confusion_matrix"] = {
        "labels": [c.value for c in CLASSES],
        "rows_true_cols_pred": counts.tolist(),
    }
    for k in present:
        tree["complex"]["per_class"][CLASSES[k].value]["support"] = int(counts[k].sum())
    for k, subtype in enumerate(ErrorSubtype):
        if subtype.value in tree.get("detection", {}):
            tree["detection"][subtype.value]["n"] = int((arrays.subtype == k).sum())
    tree.setdefault("localisation", {})["n"] = int(arrays.loc_mask.sum())
    tree["unparseable"]["total"] = int(arrays.unparseable.sum())
    tree["n_rows"] = n
    tree["n_errors"] = int(ty.sum())
    tree["n_clean"] = int((~ty).sum())
    tree["bootstrap"] = {"resamples": config.resamples, "seed": config.seed, "level": config.level}
    tree["schema"] = SCHEMA
    if info:
        tree["run"] = dict(info)
    return tree


def flatten_values(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"simple.accuracy": 0.91, ...}`` for every ``{"value": ...}`` leaf of a metrics tree."""
    flat: dict[str, float] = {}
    for key, node in tree.items():
        path = f"{prefix}{key}"
        if isinstance(node, Mapping):
            if "value" in node and "ci95" in node:
                if node["value"] is not None:
                    flat[path] = float(node["value"])
            else:
                flat.update(flatten_values(node, f"{path}."))
    return flat


def compare_metrics(a: Mapping[str, Any], b: Mapping[str, Any]) -> JSONDict:
    """Absolute (``b - a``) and relative (``(b - a) / |a|``) differences of every shared metric."""
    fa, fb = flatten_values(a), flatten_values(b)
    shared = sorted(set(fa) & set(fb))
    if not shared:
        raise MetricsError("the two metrics files share no metric; are both metrics.json files?")
    out: JSONDict = {}
    for key in shared:
        diff = fb[key] - fa[key]
        out[key] = {
            "a": fa[key],
            "b": fb[key],
            "abs_diff": _round(diff),
            "rel_diff": _round(diff / abs(fa[key])) if fa[key] else None,
        }
    return {
        "metrics": out,
        "only_in_a": sorted(set(fa) - set(fb)),
        "only_in_b": sorted(set(fb) - set(fa)),
    }
