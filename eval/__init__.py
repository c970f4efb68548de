"""RadCheck offline evaluation: corpora, seeded error injection, runners, metrics, plots.

Run it as ``python -m eval --help``. Injected text is generated at run time: never commit it.
"""

from eval.corpora import CorpusKind, load_corpus, load_csv, load_iu, load_jsonl, load_text_dir
from eval.errors import CorpusError, DatasetError, EvalError, MetricsError, RunnerError
from eval.injection import InjectionConfig, inject_corpus, inject_record
from eval.metrics import BootstrapConfig, compare_metrics, compute_metrics
from eval.pipeline import compare_files, inject_to_file, read_dataset, score_dataset
from eval.predictions import Prediction
from eval.records import LabelledRow, ReportRecord
from eval.runners import HttpRunner, InProcessRunner, Runner, run_rows

__all__ = [
    "BootstrapConfig",
    "CorpusError",
    "CorpusKind",
    "DatasetError",
    "EvalError",
    "HttpRunner",
    "InProcessRunner",
    "InjectionConfig",
    "LabelledRow",
    "MetricsError",
    "Prediction",
    "ReportRecord",
    "Runner",
    "RunnerError",
    "compare_files",
    "compare_metrics",
    "compute_metrics",
    "inject_corpus",
    "inject_record",
    "inject_to_file",
    "load_corpus",
    "load_csv",
    "load_iu",
    "load_jsonl",
    "load_text_dir",
    "read_dataset",
    "run_rows",
    "score_dataset",
]
