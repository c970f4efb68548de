"""Fixtures for the eval tests: small synthetic reports written for these tests (no IU text)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from eval.records import ReportRecord

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
IU_TGZ = SHARED / "data" / "iu_xray" / "NLMCXR_reports.tgz"

SYNTHETIC: tuple[ReportRecord, ...] = (
    ReportRecord(
        id="S001",
        findings="The heart is normal in size. There is a small left pleural effusion. "
        "No pneumothorax. Mild degenerative changes of the thoracic spine.",
        impression="Small left pleural effusion.",
        indication="Shortness of breath.",
    ),
    ReportRecord(
        id="S002",
        findings="Heart size is within normal limits. There is increased opacity in the right "
        "upper lobe. A 2.5 cm nodule is seen in the left lower lobe. No pleural effusion.",
        impression="Right upper lobe opacity and left lower lobe nodule.",
    ),
    ReportRecord(
        id="S003",
        findings="Lungs are clear. No focal consolidation, pleural effusion or pneumothorax. "
        "Stable moderate cardiomegaly.",
        impression="No acute cardiopulmonary process.",
        comparison="Prior chest radiograph.",
    ),
    ReportRecord(
        id="S004",
        findings="There is a new right basilar opacity. The cardiomediastinal silhouette is "
        "unchanged. No pneumothorax.",
        impression="New right basilar opacity, possibly pneumonia.",
    ),
    ReportRecord(
        id="S005",
        findings="Calcified granuloma in the right upper lobe. The lungs are otherwise clear. "
        "Normal heart size.",
        impression="No active disease.",
    ),
    ReportRecord(
        id="S006",
        findings="Severe emphysema. Large right pleural effusion has decreased since the prior "
        "study. Left basilar atelectasis.",
        impression="Decreasing right effusion.",
        indication="65-year-old male with dyspnea.",
        header={"patient_sex": "M", "view_position": "PA"},
    ),
    ReportRecord(
        id="S007",
        findings="No acute osseous abnormality. Heart and mediastinum are normal. Lungs are clear.",
        impression="Normal chest.",
    ),
    ReportRecord(
        id="S008",
        findings="Patchy opacity in the left lower lobe. Small bilateral pleural effusions. "
        "Endotracheal tube 4 cm above the carina.",
        impression="Left lower lobe pneumonia. Bilateral effusions.",
    ),
)


@pytest.fixture
def records() -> tuple[ReportRecord, ...]:
    return SYNTHETIC


@pytest.fixture
def split() -> Callable[[str], Sequence[tuple[int, int]]]:
    """medvlm's sentence splitter (the one the checker uses)."""
    from eval.checker import split_sentences

    return split_sentences


def write_reports_jsonl(path: Path, records: Sequence[ReportRecord]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for r in records:
            row = {
                "id": r.id,
                "findings": r.findings,
                "impression": r.impression,
                "indication": r.indication,
                "comparison": r.comparison,
                "header": dict(r.header) if r.header else None,
            }
            handle.write(json.dumps(row) + "\n")
    return path
