"""``eval score`` end to end on a small labelled JSONL written here, the HTTP runner against a
FastAPI service with the check-report contract, and an independent recomputation of the metrics
from ``predictions.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from eval.checker import normalize_findings, sections_of, split_sentences
from eval.cli import cli
from eval.injection import InjectionConfig, inject_corpus
from eval.metrics import BootstrapConfig
from eval.pipeline import METRICS_FILE, PREDICTIONS_FILE, score_dataset
from eval.records import LabelledRow
from eval.runners import HttpRunner, InProcessRunner
from medvlm.checking import Checker, HeaderFacts
from medvlm.reports import ParsedReport, parse_report
from tests.eval.conftest import SYNTHETIC

API_KEY = "test-key"
HAND_WRITTEN = [
    {  # raw text instead of sections, clean
        "id": "H1",
        "text": "FINDINGS: The lungs are clear. No pleural effusion.\nIMPRESSION: Normal chest.",
        "label_simple": "N",
        "label_complex": "original",
    },
    {  # findings contradict impression on the side: a substitute error in sentence 1
        "id": "H2",
        "findings": "Heart size is normal. There is a small right pleural effusion.",
        "impression": "Small left pleural effusion.",
        "label_simple": "Y",
        "label_complex": "substitute",
        "subtype": "laterality",
        "sentence_index": 1,
    },
    {  # header says female, indication says male
        "id": "H3",
        "findings": "The lungs are clear.",
        "impression": "Normal chest.",
        "indication": "70-year-old man with cough.",
        "header": {"patient_sex": "F", "view_position": "PA"},
        "label_simple": "Y",
        "label_complex": "substitute",
        "subtype": "header_mismatch",
    },
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "labelled.jsonl"
    rows: list[dict[str, Any]] = []
    for seed in (0, 1, 2):
        for row in inject_corpus(
            SYNTHETIC,
            InjectionConfig(seed=seed, p_original=0.4),
            split=split_sentences,
            sections_of=sections_of,
            normalize=normalize_findings,
        ):
            rows.append({**row, "id": f"{row['id']}-{seed}"})
    rows += HAND_WRITTEN
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return path


def service(checker: Checker) -> FastAPI:
    """The check-report contract (request sections or text + header; response to_dict())."""
    api = FastAPI()

    @api.post("/api/v1/check-report")
    def check_report(body: dict[str, Any], x_api_key: str = Header(default="")) -> dict[str, Any]:
        if x_api_key != API_KEY:
            raise HTTPException(status_code=401, detail="bad key")
        if body.get("text"):
            parsed = parse_report(body["text"])
        else:
            parsed = ParsedReport.from_sections(
                **{k: body.get(k) for k in ("findings", "impression", "indication", "comparison")}
            )
        header = HeaderFacts.from_dict(body["header"]) if body.get("header") else None
        result: dict[str, Any] = checker.check(parsed, header=header).to_dict()
        return result

    return api


@pytest.fixture(scope="module")
def http_client() -> Iterator[TestClient]:
    with TestClient(service(Checker(runtime=None))) as client:
        yield client


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_cli_writes_outputs(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["score", "--dataset", str(dataset), "--out", str(out), "--no-progress",
              "--bootstrap", "200"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SIMPLE accuracy" in result.output
    metrics = json.loads((out / METRICS_FILE).read_text())
    for key in ("accuracy", "f1"):
        assert set(metrics["simple"][key]) == {"value", "ci95"}
    assert metrics["complex"]["macro_f1"]["ci95"] is not None
    assert metrics["detection"]["laterality"]["rate"]["ci95"] is not None
    preds = _lines(out / PREDICTIONS_FILE)
    assert [p["id"] for p in preds] == [r["id"] for r in _lines(dataset)]
    flagged = [f for p in preds for f in p["flags"]]
    assert flagged and all({"section", "sentence_index", "start", "end"} <= set(f) for f in flagged)
    report = (out / "report.md").read_text()
    assert "OTHER datasets" in report and "Gertz" in report and "2312.13103" in report
    for png in ("confusion_matrix.png", "detection_by_subtype.png", "score_distribution.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def _ratio(num: int, den: int) -> float:
    return round(num / den, 6) if den else 0.0


def test_metrics_agree_with_independent_recomputation(dataset: Path, tmp_path: Path) -> None:
    outcome = score_dataset(
        dataset, tmp_path, InProcessRunner(), bootstrap=BootstrapConfig(0), report=False
    )
    m = json.loads((tmp_path / METRICS_FILE).read_text())
    assert m == json.loads(json.dumps(outcome.metrics))
    truth = {r["id"]: r for r in _lines(dataset)}
    preds = {p["id"]: p for p in _lines(tmp_path / PREDICTIONS_FILE)}
    pairs = [(truth[i], preds[i]) for i in truth]
    tp = sum(t["label_simple"] == "Y" and p["pred_simple"] == "Y" for t, p in pairs)
    fp = sum(t["label_simple"] == "N" and p["pred_simple"] == "Y" for t, p in pairs)
    tn = sum(t["label_simple"] == "N" and p["pred_simple"] == "N" for t, p in pairs)
    fn = sum(t["label_simple"] == "Y" and p["pred_simple"] == "N" for t, p in pairs)
    assert m["simple"]["counts"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    precision, recall = tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0
    spec = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert m["simple"]["accuracy"]["value"] == _ratio(tp + tn, len(pairs))
    assert m["simple"]["precision"]["value"] == round(precision, 6)
    assert m["simple"]["recall"]["value"] == round(recall, 6)
    assert m["simple"]["f1"]["value"] == round(f1, 6)
    assert m["simple"]["specificity"]["value"] == round(spec, 6)
    assert m["simple"]["balanced_accuracy"]["value"] == round((recall + spec) / 2, 6)
    correct = sum(t["label_complex"] == p["pred_complex"] for t, p in pairs)
    assert m["complex"]["accuracy"]["value"] == _ratio(correct, len(pairs))
    classes = sorted({t["label_complex"] for t, _ in pairs} | {p["pred_complex"] for _, p in pairs})
    f1s = []
    for c in classes:
        hit = sum(t["label_complex"] == c and p["pred_complex"] == c for t, p in pairs)
        npred = sum(p["pred_complex"] == c for _, p in pairs)
        ntrue = sum(t["label_complex"] == c for t, _ in pairs)
        pc, rc = (hit / npred if npred else 0.0), (hit / ntrue if ntrue else 0.0)
        f1s.append(2 * pc * rc / (pc + rc) if pc + rc else 0.0)
    assert m["complex"]["macro_f1"]["value"] == round(sum(f1s) / len(f1s), 6)
    for subtype in {t["subtype"] for t, _ in pairs if t.get("subtype")}:
        rows = [(t, p) for t, p in pairs if t.get("subtype") == subtype]
        detected = sum(p["pred_simple"] == "Y" for _, p in rows)
        assert m["detection"][subtype]["rate"]["value"] == _ratio(detected, len(rows))
        assert m["detection"][subtype]["n"] == len(rows)
    loc = [
        (t, p) for t, p in pairs if t["label_simple"] == "Y" and t.get("sentence_index") is not None
    ]
    hits = sum(
        any(f["section"] == "findings" and f["sentence_index"] == t["sentence_index"]
            for f in p["flags"])
        for t, p in loc
    )  # fmt: skip
    assert m["localisation"]["n"] == len(loc)
    assert m["localisation"]["hit_rate"]["value"] == _ratio(hits, len(loc))
    clean = [p for t, p in pairs if t["label_simple"] == "N"]
    per_clean = sum(len(p["flags"]) for p in clean)
    assert m["false_flags"]["per_clean_report"]["value"] == _ratio(per_clean, len(clean))
    assert m["n_rows"] == len(pairs) == len(truth)


def test_rerun_is_byte_identical_and_served_from_cache(dataset: Path, tmp_path: Path) -> None:
    first = score_dataset(dataset, tmp_path, InProcessRunner(), bootstrap=BootstrapConfig(100),
                          progress=False, report=False)  # fmt: skip
    metrics_bytes = (tmp_path / METRICS_FILE).read_bytes()
    preds_bytes = (tmp_path / PREDICTIONS_FILE).read_bytes()
    second = score_dataset(dataset, tmp_path, InProcessRunner(), bootstrap=BootstrapConfig(100),
                           progress=False, report=False)  # fmt: skip
    n = len(_lines(dataset))
    unique_inputs = len({LabelledRow.from_dict(r).input_hash() for r in _lines(dataset)})
    assert unique_inputs < n  # originals repeat across seeds: checked once
    assert (first.stats.computed, first.stats.cached) == (unique_inputs, n - unique_inputs)
    assert (second.stats.computed, second.stats.cached) == (0, n)
    assert (tmp_path / METRICS_FILE).read_bytes() == metrics_bytes
    assert (tmp_path / PREDICTIONS_FILE).read_bytes() == preds_bytes


def test_http_runner_gives_the_in_process_predictions(
    dataset: Path, tmp_path: Path, http_client: TestClient
) -> None:
    local = score_dataset(dataset, tmp_path / "local", InProcessRunner(), report=False,
                          bootstrap=BootstrapConfig(50), progress=False)  # fmt: skip
    remote = score_dataset(
        dataset,
        tmp_path / "http",
        HttpRunner("http://testserver", API_KEY, client=http_client),
        bootstrap=BootstrapConfig(50),
        progress=False,
        report=False,
    )
    assert remote.stats.computed == local.stats.computed > 0
    assert (tmp_path / "http" / PREDICTIONS_FILE).read_bytes() == (
        tmp_path / "local" / PREDICTIONS_FILE
    ).read_bytes()
    strip = lambda m: {k: v for k, v in m.items() if k != "run"}  # noqa: E731
    assert strip(remote.metrics) == strip(local.metrics)
