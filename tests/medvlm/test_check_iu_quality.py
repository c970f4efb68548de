"""Checker quality on the real IU X-ray reports (slow; skips when ../shared/data is absent).

Graded with eval's injector (``eval.contradictions`` through ``eval.yardstick``): contradictions
whose sites are chosen without the checker's parser, made in memory and never written (the
reports are CC BY-NC-ND). On 300 reports of the dev split: at most 2% of clean reports flagged
(IU and MIMIC-style layouts apart), at least 90% of the injected contradictions caught with a
flag on the modified sentence or its counterpart.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.corpora import load_iu
from eval.yardstick import run_yardstick
from medvlm.checking import Checker

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "iu_xray" / "NLMCXR_reports.tgz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.exists(), reason="IU X-ray reports not present in ../shared/data"),
]


def test_clean_and_injected_iu_reports() -> None:
    result = run_yardstick(
        load_iu(DATA), split="dev", seed=7, limit=300, layouts=("iu_sections", "mimic_wrapped"),
        checker=Checker(),
    )  # fmt: skip
    clean = result["clean_flagged"]
    assert clean["iu_style"]["rate"] <= 0.02, clean
    assert clean["mimic_style"]["rate"] <= 0.02, clean
    injected = result["injected"]["overall"]
    assert injected["caught"]["n"] >= 300
    assert injected["caught_and_pointed"]["rate"] >= 0.90, injected
