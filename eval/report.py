"""The Markdown report with matplotlib plots (Agg backend, PNG files next to ``report.md``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from eval.anchors import PUBLISHED_ANCHORS
from eval.predictions import Prediction
from eval.records import LabelledRow

CONFUSION_PNG = "confusion_matrix.png"
DETECTION_PNG = "detection_by_subtype.png"
SCORES_PNG = "score_distribution.png"
_PNG_META = {"Software": None}


def _fmt(node: Mapping[str, Any] | None) -> str:
    if not node or node.get("value") is None:
        return "n/a"
    ci = node.get("ci95")
    if ci and ci[0] is not None:
        return f"{node['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{node['value']:.3f}"


def plot_confusion(metrics: Mapping[str, Any], path: Path) -> None:
    """COMPLEX confusion matrix (rows: label, columns: prediction)."""
    cm = metrics["complex"]["confusion_matrix"]
    labels, counts = cm["labels"], np.asarray(cm["rows_true_cols_pred"])
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    top = counts.max() if counts.size else 0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            color = "white" if top and counts[i, j] > top / 2 else "black"
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color)
    ax.set_title("COMPLEX confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)


def plot_detection(metrics: Mapping[str, Any], path: Path) -> None:
    """Per-subtype detection rate with 95% CI error bars."""
    detection = metrics.get("detection", {})
    names = sorted(detection)
    values = [detection[n]["rate"]["value"] for n in names]
    lows = [detection[n]["rate"]["ci95"] or [v, v] for n, v in zip(names, values, strict=True)]
    err = np.array(
        [
            [v - lo[0] for v, lo in zip(values, lows, strict=True)],
            [lo[1] - v for v, lo in zip(values, lows, strict=True)],
        ]
    )
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.bar(range(len(names)), values, yerr=err if names else None, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), [f"{n}\n(n={detection[n]['n']})" for n in names], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("detection rate (SIMPLE = Y)")
    ax.set_title("Detection by injected error subtype (95% bootstrap CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)


def plot_scores(rows: Sequence[LabelledRow], preds: Sequence[Prediction], path: Path) -> None:
    """Distributions of the highest flag confidence and of the flag count, clean vs erroneous."""
    by_id = {p.id: p for p in preds}
    groups = {
        "clean": [r for r in rows if not r.is_error],
        "error": [r for r in rows if r.is_error],
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    bins = np.linspace(0, 1, 21)
    for name, group in groups.items():
        scores = [by_id[r.id].max_confidence() for r in group]
        left.hist(scores, bins=bins, alpha=0.6, label=f"{name} (n={len(group)})")
        counts = [len(by_id[r.id].flags) for r in group]
        top = max(counts, default=0)
        right.hist(counts, bins=np.arange(top + 2) - 0.5, alpha=0.6, label=name)
    left.set_xlabel("highest flag confidence per report (0 = no flag)")
    left.set_ylabel("reports")
    left.legend()
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("flags per report")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata=_PNG_META)
    plt.close(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def write_report(
    out_dir: Path,
    metrics: Mapping[str, Any],
    rows: Sequence[LabelledRow],
    preds: Sequence[Prediction],
    *,
    title: str = "RadCheck evaluation",
) -> Path:
    """Write ``report.md`` and its three plots into ``out_dir``; return the report path."""
    plot_confusion(metrics, out_dir / CONFUSION_PNG)
    plot_detection(metrics, out_dir / DETECTION_PNG)
    plot_scores(rows, preds, out_dir / SCORES_PNG)
    simple, complex_ = metrics["simple"], metrics["complex"]
    lines = [
        f"# {title}",
        "",
        f"{metrics['n_rows']} reports: {metrics['n_errors']} with an error, "
        f"{metrics['n_clean']} clean. Values with 95% bootstrap CIs "
        f"({metrics['bootstrap']['resamples']} resamples, seed {metrics['bootstrap']['seed']}).",
        "Errors are synthetic (run-time injection); rule and model output is unverified AI output.",
        "",
        "## SIMPLE (does the report contain an error?)",
        "",
        *_table(
            ["metric", "value [95% CI]"],
            [
                [k, _fmt(simple.get(k))]
                for k in (
                    "accuracy",
                    "precision",
                    "recall",
                    "f1",
                    "specificity",
                    "balanced_accuracy",
                )
            ],
        ),
        "",
        "Counts: " + ", ".join(f"{k} {v}" for k, v in sorted(simple["counts"].items())),
        "",
        "## COMPLEX (original / insert / remove / substitute)",
        "",
        f"Accuracy {_fmt(complex_.get('accuracy'))}; macro-F1 {_fmt(complex_.get('macro_f1'))} "
        f"over {', '.join(complex_['classes'])}. With half the reports original, always answering "
        "'original' already scores 50% accuracy.",
        "",
        *_table(
            ["class", "precision", "recall", "F1", "support"],
            [
                [
                    name,
                    _fmt(c.get("precision")),
                    _fmt(c.get("recall")),
                    _fmt(c.get("f1")),
                    str(c.get("support", 0)),
                ]
                for name, c in sorted(complex_.get("per_class", {}).items())
            ],
        ),
        "",
        f"![confusion matrix]({CONFUSION_PNG})",
        "",
        "## Detection by error subtype",
        "",
        *_table(
            ["subtype", "n", "detected (SIMPLE = Y)", "flag of that subtype"],
            [
                [name, str(d["n"]), _fmt(d.get("rate")), _fmt(d.get("typed_rate"))]
                for name, d in sorted(metrics.get("detection", {}).items())
            ],
        ),
        "",
        f"![detection by subtype]({DETECTION_PNG})",
        "",
        "## Localisation, false flags, model answers",
        "",
        *_table(
            ["metric", "value [95% CI]"],
            [
                [
                    "flag on the modified findings sentence (all errors with a sentence, n="
                    f"{metrics['localisation']['n']})",
                    _fmt(metrics["localisation"].get("hit_rate")),
                ],
                [
                    "same, among detected errors",
                    _fmt(metrics["localisation"].get("hit_rate_given_detected")),
                ],
                [
                    "false flags per clean report",
                    _fmt(metrics["false_flags"].get("per_clean_report")),
                ],
                [
                    "clean reports with any flag",
                    _fmt(metrics["false_flags"].get("clean_reports_with_any_flag")),
                ],
                [
                    "reports with an unparseable model answer",
                    _fmt(metrics["unparseable"].get("row_rate")),
                ],
            ],
        ),
        "",
        f"![score distribution]({SCORES_PNG})",
        "",
        "## Published anchors (OTHER datasets and setups: not directly comparable)",
        "",
        *_table(
            ["source", "dataset (not ours)", "task", "reported result"],
            [[a.source, a.dataset, a.task, a.result] for a in PUBLISHED_ANCHORS],
        ),
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
