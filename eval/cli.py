"""``python -m eval``: build error datasets, run the checker, score, report, compare."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from eval.corpora import IU_HOW_TO_GET, CorpusKind
from eval.errors import EvalError
from eval.injection import ALL_SUBTYPES, InjectionConfig
from eval.metrics import BootstrapConfig
from eval.pipeline import DATASET_FILE, compare_files, inject_to_file, score_dataset, write_json
from eval.runners import HttpRunner, InProcessRunner, Runner
from medvlm.taxonomy import ErrorSubtype

logger = logging.getLogger("eval")

cli = typer.Typer(
    name="python -m eval",
    help=(
        "RadCheck offline evaluation: inject seeded synthetic errors into real reports, run the "
        "checker in process or against the API, and report SIMPLE/COMPLEX metrics with bootstrap "
        "CIs, per-subtype detection, localisation and false flags. Injected text is generated at "
        "run time: never commit it (the IU X-ray licence forbids modified copies)."
    ),
    no_args_is_help=True,
    add_completion=False,
)


class RunnerKind(StrEnum):
    """Where the checker runs."""

    IN_PROCESS = "in-process"
    HTTP = "http"


IU_DEFAULT_CANDIDATES = (
    Path("../shared/data/iu_xray/NLMCXR_reports.tgz"),
    Path("data/iu_xray/NLMCXR_reports.tgz"),
    Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz",
)

CorpusOpt = Annotated[CorpusKind, typer.Option(help="corpus format")]
CorpusPathOpt = Annotated[
    Path | None,
    typer.Option(
        help="corpus file or folder (iu: NLMCXR_reports.tgz or the torchxrayvision 1.5.7 wheel; "
        "csv/jsonl: a file; text: a folder of .txt). Default for iu: "
        "../shared/data/iu_xray/NLMCXR_reports.tgz"
    ),
]
NOpt = Annotated[int | None, typer.Option(help="number of reports with FINDINGS to use (all)")]
SeedOpt = Annotated[int, typer.Option(help="injection seed (same seed -> identical dataset)")]
POrigOpt = Annotated[float, typer.Option(help="share of reports left original")]
ErrorsOpt = Annotated[int, typer.Option(help="errors injected per erroneous report")]
SubtypesOpt = Annotated[
    str,
    typer.Option(help="comma-separated error subtypes to inject"),
]
RunnerOpt = Annotated[RunnerKind, typer.Option(help="run the checker in process or over HTTP")]
UrlOpt = Annotated[str, typer.Option(help="RadCheck API base URL (http runner)")]
KeyOpt = Annotated[
    str | None,
    typer.Option(envvar="RADCHECK_API_KEY", help="API key for the http runner (X-API-Key)"),
]
BootOpt = Annotated[int, typer.Option(help="bootstrap resamples for the 95% CIs (0: none)")]
BootSeedOpt = Annotated[int, typer.Option(help="bootstrap seed")]
ProgressOpt = Annotated[bool, typer.Option(help="show progress bars")]
ReportOpt = Annotated[bool, typer.Option(help="write report.md with plots")]
_DEFAULT_SUBTYPES = ",".join(s.value for s in ALL_SUBTYPES)


def _corpus_path(kind: CorpusKind, path: Path | None) -> Path:
    if path is not None:
        return path
    if kind is CorpusKind.IU:
        for candidate in IU_DEFAULT_CANDIDATES:
            if candidate.is_file():
                return candidate
        raise EvalError(f"no --corpus-path given and no IU archive in the default places; "
                        f"{IU_HOW_TO_GET}")  # fmt: skip
    raise EvalError(f"--corpus-path is required for corpus kind {kind.value!r}")


def _subtypes(raw: str) -> tuple[ErrorSubtype, ...]:
    try:
        return tuple(ErrorSubtype(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise EvalError(f"{exc}; choose among {_DEFAULT_SUBTYPES}") from None


def _runner(kind: RunnerKind, url: str, api_key: str | None) -> Runner:
    if kind is RunnerKind.HTTP:
        return HttpRunner(url, api_key or "")
    return InProcessRunner()


def _fail(exc: EvalError) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg="red")
    return typer.Exit(code=2)


def _headline(metrics: Mapping[str, Any], out: Path, seconds: float) -> None:
    simple, complex_ = metrics["simple"], metrics["complex"]
    typer.echo(
        f"{metrics['n_rows']} rows ({metrics['n_errors']} errors): SIMPLE accuracy "
        f"{simple['accuracy']['value']} F1 {simple['f1']['value']}, COMPLEX macro-F1 "
        f"{complex_['macro_f1']['value']}; {seconds:.1f} s; results in {out}"
    )


@cli.command()
def inject(
    out: Annotated[Path, typer.Option(help="dataset JSONL to write")],
    corpus: CorpusOpt = CorpusKind.IU,
    corpus_path: CorpusPathOpt = None,
    n: NOpt = None,
    seed: SeedOpt = 0,
    p_original: POrigOpt = 0.5,
    errors_per_report: ErrorsOpt = 1,
    subtypes: SubtypesOpt = _DEFAULT_SUBTYPES,
) -> None:
    """Inject seeded synthetic errors into a corpus and write a labelled dataset JSONL."""
    try:
        config = InjectionConfig(seed, p_original, errors_per_report, _subtypes(subtypes))
        count = inject_to_file(corpus, _corpus_path(corpus, corpus_path), out, config, n=n)
    except EvalError as exc:
        raise _fail(exc) from exc
    typer.echo(f"wrote {count} rows to {out}")


@cli.command()
def score(
    dataset: Annotated[
        Path,
        typer.Option(
            help="labelled JSONL (id, findings/impression or text, "
            "label_simple, label_complex, ...)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="output folder")],
    runner: RunnerOpt = RunnerKind.IN_PROCESS,
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = None,
    bootstrap: BootOpt = 1000,
    bootstrap_seed: BootSeedOpt = 0,
    progress: ProgressOpt = True,
    report: ReportOpt = True,
) -> None:
    """Score the checker on a labelled JSONL: predictions.jsonl, metrics.json, report.md."""
    try:
        outcome = score_dataset(
            dataset,
            out,
            _runner(runner, url, api_key),
            bootstrap=BootstrapConfig(bootstrap, bootstrap_seed),
            progress=progress,
            report=report,
        )
    except EvalError as exc:
        raise _fail(exc) from exc
    _headline(outcome.metrics, out, outcome.seconds)


@cli.command()
def run(
    out: Annotated[Path, typer.Option(help="output folder")],
    corpus: CorpusOpt = CorpusKind.IU,
    corpus_path: CorpusPathOpt = None,
    n: NOpt = None,
    seed: SeedOpt = 0,
    p_original: POrigOpt = 0.5,
    errors_per_report: ErrorsOpt = 1,
    subtypes: SubtypesOpt = _DEFAULT_SUBTYPES,
    runner: RunnerOpt = RunnerKind.IN_PROCESS,
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = None,
    bootstrap: BootOpt = 1000,
    bootstrap_seed: BootSeedOpt = 0,
    progress: ProgressOpt = True,
    report: ReportOpt = True,
) -> None:
    """Inject, run, score and report in one go (writes dataset.jsonl into the output folder)."""
    started = time.perf_counter()
    try:
        config = InjectionConfig(seed, p_original, errors_per_report, _subtypes(subtypes))
        dataset = out / DATASET_FILE
        inject_to_file(corpus, _corpus_path(corpus, corpus_path), dataset, config, n=n)
        outcome = score_dataset(
            dataset,
            out,
            _runner(runner, url, api_key),
            bootstrap=BootstrapConfig(bootstrap, bootstrap_seed),
            progress=progress,
            report=report,
        )
    except EvalError as exc:
        raise _fail(exc) from exc
    _headline(outcome.metrics, out, time.perf_counter() - started)


@cli.command()
def compare(
    a: Annotated[Path, typer.Argument(help="baseline metrics.json")],
    b: Annotated[Path, typer.Argument(help="new metrics.json")],
    out: Annotated[Path | None, typer.Option(help="also write the comparison as JSON")] = None,
) -> None:
    """Absolute (B - A) and relative ((B - A) / |A|) differences of every metric of two runs."""
    try:
        result = compare_files(a, b)
    except EvalError as exc:
        raise _fail(exc) from exc
    if out is not None:
        write_json(out, result)
    typer.echo(f"{'metric':<55} {'A':>9} {'B':>9} {'B-A':>9} {'rel':>9}")
    for key, row in result["metrics"].items():
        rel = "n/a" if row["rel_diff"] is None else f"{row['rel_diff']:+.1%}"
        typer.echo(f"{key:<55} {row['a']:>9.4f} {row['b']:>9.4f} {row['abs_diff']:>+9.4f} {rel:>9}")


class SplitKind(StrEnum):
    """Yardstick splits: tune on dev; the frozen test split is for reporting only."""

    DEV = "dev"
    TEST = "test"
    ALL = "all"


@cli.command()
def yardstick(
    split: Annotated[SplitKind, typer.Option(help="dev (tune here), test (frozen) or all")] = (
        SplitKind.DEV
    ),
    out: Annotated[Path, typer.Option(help="JSON results")] = Path("results/yardstick.json"),
    corpus_path: CorpusPathOpt = None,
    n: NOpt = None,
    seed: SeedOpt = 0,
    examples: Annotated[int, typer.Option(help="missed / falsely flagged examples to keep")] = 0,
    icu_dir: Annotated[
        Path | None, typer.Option(help="hand-written ICU-style raw reports (.txt)")
    ] = None,
) -> None:
    """The honest yardstick: findings-vs-impression contradictions injected without the
    checker's parser, in several layouts, per pattern and layout with 95% CIs, and the clean-flag
    rate (IU and MIMIC-style apart). Injected text stays in memory (never written)."""
    from eval.corpora import load_corpus
    from eval.yardstick import ICU_FIXTURES, load_icu_fixtures, run_yardstick

    try:
        records = load_corpus(CorpusKind.IU, _corpus_path(CorpusKind.IU, corpus_path))
        result = run_yardstick(
            records,
            split=split.value,
            seed=seed,
            limit=n,
            icu=load_icu_fixtures(icu_dir or ICU_FIXTURES),
            examples=examples,
        )
    except EvalError as exc:
        raise _fail(exc) from exc
    write_json(out, result)
    inj = result["injected"]["overall"]
    clean = result["clean_flagged"]
    typer.echo(
        f"{split.value}: {result['reports']} reports; caught {inj['caught']['rate']} "
        f"{inj['caught']['ci95']}, caught and pointed {inj['caught_and_pointed']['rate']}; "
        f"clean flagged IU {clean['iu_style']['rate']} MIMIC {clean['mimic_style']['rate']}; "
        f"{result['seconds']} s; results in {out}"
    )
    for name, row in result["injected"]["by_pattern"].items():
        typer.echo(f"  {name:<22} caught {row['caught']['rate']} {row['caught']['ci95']}")
    for name, row in result["injected"]["by_layout"].items():
        typer.echo(f"  {name:<30} caught {row['caught']['rate']} {row['caught']['ci95']}")


def main() -> None:
    """Entry point: configure logging, run the Typer app."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli()
