"""The commands' work: inject a dataset, score a labelled dataset, do both (`run`), compare runs."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.checker import normalize_findings, sections_of, split_sentences
from eval.corpora import CorpusKind, iter_jsonl, load_corpus
from eval.errors import DatasetError, MetricsError
from eval.injection import InjectionConfig, SentenceSplitter, inject_corpus
from eval.metrics import BootstrapConfig, compare_metrics, compute_metrics
from eval.records import JSONDict, LabelledRow
from eval.report import write_report
from eval.runners import Runner, RunStats, run_rows

logger = logging.getLogger(__name__)

DATASET_FILE = "dataset.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


def _json_line(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False) + "\n"


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as deterministic JSONL (sorted keys); return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(_json_line(row))
            count += 1
    return count


def write_json(path: Path, value: Any) -> None:
    """Write deterministic, indented JSON (sorted keys, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n", "utf-8")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inject_to_file(
    kind: CorpusKind | str,
    corpus_path: Path,
    out_file: Path,
    config: InjectionConfig,
    *,
    n: int | None = None,
    split: SentenceSplitter = split_sentences,
) -> int:
    """Read a corpus, inject errors, write the dataset JSONL; return the number of rows."""
    rows = inject_corpus(
        load_corpus(kind, corpus_path),
        config,
        split=split,
        sections_of=sections_of,
        normalize=normalize_findings,
        n=n,
    )
    count = write_jsonl(out_file, rows)
    logger.info("wrote %d dataset rows (seed %d)", count, config.seed)
    return count


def read_dataset(path: Path) -> list[LabelledRow]:
    """Read and validate a labelled JSONL dataset (ids must be unique)."""
    rows: list[LabelledRow] = []
    seen: set[str] = set()
    for where, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: each line must be a JSON object")
        row = LabelledRow.from_dict(obj, where)
        if row.id in seen:
            raise DatasetError(f"{where}: duplicate id {row.id!r}; ids must be unique")
        seen.add(row.id)
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: no rows; the dataset is empty")
    return rows


@dataclass(frozen=True, slots=True)
class ScoreOutcome:
    """What `score_dataset` wrote and how long it took."""

    metrics: JSONDict
    stats: RunStats
    out_dir: Path
    seconds: float


def score_dataset(
    dataset: Path,
    out_dir: Path,
    runner: Runner,
    *,
    bootstrap: BootstrapConfig | None = None,
    progress: bool = True,
    report: bool = True,
) -> ScoreOutcome:
    """Run ``runner`` on a labelled dataset; write predictions, metrics and the report."""
    started = time.perf_counter()
    rows = read_dataset(dataset)
    preds, stats = run_rows(rows, runner, out_dir, progress=progress)
    write_jsonl(out_dir / PREDICTIONS_FILE, (p.to_dict() for p in preds))
    info = {"dataset_sha256": file_sha256(dataset), "runner": runner.describe()}
    metrics = compute_metrics(rows, preds, bootstrap, info)
    write_json(out_dir / METRICS_FILE, metrics)
    if report:
        write_report(out_dir, metrics, rows, preds, title=f"RadCheck evaluation: {dataset.name}")
    return ScoreOutcome(metrics, stats, out_dir, time.perf_counter() - started)


def compare_files(a: Path, b: Path) -> JSONDict:
    """Differences between two ``metrics.json`` files (``b`` minus ``a``)."""
    loaded = []
    for path in (a, b):
        try:
            loaded.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise MetricsError(f"{path} not found; pass two metrics.json files") from None
        except json.JSONDecodeError as exc:
            raise MetricsError(
                f"{path} is not JSON ({exc.msg}); pass a metrics.json file"
            ) from None
    result = compare_metrics(loaded[0], loaded[1])
    result["a"], result["b"] = str(a), str(b)
    return result
