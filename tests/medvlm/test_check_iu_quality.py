"""Checker quality on the real IU X-ray reports (slow; skips when ../shared/data is absent).

Injected contradictions are made in memory at run time by ``bench/checker.py`` and never written
(the reports are CC BY-NC-ND). Bars from issue 5: at most 5% of clean reports flagged and at least
85% of injected contradictions caught with a flag on the modified sentence.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from medvlm.checking import Checker

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason="IU X-ray reports not present in ../shared/data"),
]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_checker", ROOT / "bench" / "checker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_checker"] = module
    spec.loader.exec_module(module)
    return module


def test_clean_and_injected_iu_reports(bench: ModuleType) -> None:
    checker = Checker()
    reports = bench.load_iu(DATA)[:1500]
    quality = bench.bench_quality(checker, reports, seed=7, show=0)
    for style in ("iu_sections", "mimic_raw_text"):
        clean = quality[f"clean_{style}"]
        injected = quality[f"injected_{style}"]
        assert clean["flagged_rate"] <= 0.05, clean
        assert injected["n"] >= 300
        assert injected["caught_and_pointed_rate"] >= 0.85, injected
