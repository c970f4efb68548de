"""The resumable cache: rows already checked under the same configuration are not checked again."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from eval.errors import RunnerError
from eval.records import JSONDict, LabelledRow
from eval.runners import CACHE_FILE, HttpRunner, run_rows
from medvlm.taxonomy import ComplexClass


class CountingRunner:
    """A stand-in checker (the cache is under test here, not the checker): flags 'effusion'."""

    def __init__(self, version: str = "1") -> None:
        self.calls: list[str] = []
        self.version = version

    def describe(self) -> JSONDict:
        return {"runner": "counting", "version": self.version}

    def check(self, row: LabelledRow) -> JSONDict:
        self.calls.append(row.id)
        hit = "effusion" in (row.findings or "")
        return {
            "verdict_simple": "Y" if hit else "N",
            "verdict_complex": "substitute" if hit else "original",
            "flags": [{"subtype": "negation", "section": "findings", "sentence_index": 0}]
            if hit
            else [],
            "unparseable_answers": 0,
        }


def _rows(n: int) -> list[LabelledRow]:
    return [
        LabelledRow(
            id=f"r{i}",
            label_simple="N",
            label_complex=ComplexClass.ORIGINAL,
            findings=f"Report {i}. {'Small effusion.' if i % 2 else 'Clear.'}",
        )
        for i in range(n)
    ]


def test_resume_skips_cached_rows(tmp_path: Path) -> None:
    first = CountingRunner()
    preds, stats = run_rows(_rows(3), first, tmp_path, progress=False)
    assert first.calls == ["r0", "r1", "r2"] and (stats.computed, stats.cached) == (3, 0)
    second = CountingRunner()
    preds2, stats2 = run_rows(_rows(5), second, tmp_path, progress=False)
    assert second.calls == ["r3", "r4"] and (stats2.computed, stats2.cached) == (2, 3)
    assert [p.to_dict() for p in preds2[:3]] == [p.to_dict() for p in preds]
    assert preds2[1].pred_simple == "Y" and preds2[1].flags[0]["sentence_index"] == 0


def test_new_configuration_or_changed_row_is_checked_again(tmp_path: Path) -> None:
    run_rows(_rows(2), CountingRunner("1"), tmp_path, progress=False)
    other = CountingRunner("2")
    run_rows(_rows(2), other, tmp_path, progress=False)
    assert other.calls == ["r0", "r1"]
    changed = [*_rows(1), LabelledRow("r1", "N", ComplexClass.ORIGINAL, findings="Edited.")]
    again = CountingRunner("2")
    run_rows(changed, again, tmp_path, progress=False)
    assert again.calls == ["r1"]


def test_partial_last_cache_line_is_ignored(tmp_path: Path) -> None:
    run_rows(_rows(2), CountingRunner(), tmp_path, progress=False)
    cache = tmp_path / CACHE_FILE
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # crash mid-write
    runner = CountingRunner()
    run_rows(_rows(2), runner, tmp_path, progress=False)
    assert runner.calls == ["r1"]
    assert all(json.loads(line)["key"] for line in cache.read_text().splitlines()[2:])


def test_http_runner_reports_refused_key_and_unreachable_service() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-API-Key"] == "k"
        return httpx.Response(401, json={"detail": "bad key"})

    runner = HttpRunner(
        "http://radcheck", "k", client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    with pytest.raises(RunnerError, match="refused the API key"):
        runner.check(_rows(1)[0])

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    runner = HttpRunner(
        "http://radcheck", "k", client=httpx.Client(transport=httpx.MockTransport(down)), retries=0
    )
    with pytest.raises(RunnerError, match="is the RadCheck API running"):
        runner.check(_rows(1)[0])
    with pytest.raises(RunnerError, match="needs an API key"):
        HttpRunner("http://radcheck", "")


def test_in_process_configuration_names_rules_kb_config_and_code() -> None:
    from eval.runners import InProcessRunner, config_hash

    runner = InProcessRunner()
    described = runner.describe()
    assert {"ruleset_version", "kb_version", "config", "code_sha256"} <= set(described)
    assert len(described["code_sha256"]) == 64
    assert config_hash(runner) == config_hash(InProcessRunner())
