"""Qualifier words once (issue 9, item 4): what the rules read is what the extractor finds."""

from __future__ import annotations

import pytest

from medvlm.checking import Checker
from medvlm.prompts.knowledge import load_knowledge_base
from medvlm.reports import parse_report
from medvlm.reports.vocabulary import (
    CHRONIC,
    OTHERWISE,
    PLACEHOLDERS,
    QUALIFIERS,
    WEAK_BROAD_DENIAL,
    WEAK_DENIAL,
)


@pytest.mark.parametrize("word", sorted(QUALIFIERS))
def test_every_rule_word_is_extracted(word: str) -> None:
    report = parse_report(f"FINDINGS: There is {word} pleural effusion.")
    (mention,) = [m for _, _, m in report.mentions() if m.concept == "pleural_effusion"]
    assert word in mention.qualifiers


def test_rule_groups_are_in_the_extracted_list() -> None:
    assert WEAK_DENIAL | WEAK_BROAD_DENIAL | CHRONIC | PLACEHOLDERS | {OTHERWISE} <= QUALIFIERS


def test_knowledge_base_conditions_use_extracted_words() -> None:
    kb = load_knowledge_base()
    words = {w for f in kb.findings.values() for w in f.acute_when}
    words |= {
        c.removeprefix("qualifier:")
        for f in kb.findings.values()
        for c in f.significant_when
        if c.startswith("qualifier:")
    }
    assert words and words <= QUALIFIERS, sorted(words - QUALIFIERS)


@pytest.mark.parametrize(
    ("impression", "flagged"), [("No effusion.", True), ("No new effusion.", False)]
)
def test_a_weak_denial_word_spares_the_assertion(impression: str, flagged: bool) -> None:
    """'no new effusion' leaves room for an existing one (the word comes from WEAK_DENIAL)."""
    result = Checker(runtime=None).check(
        parse_report(f"FINDINGS: Small left pleural effusion. IMPRESSION: {impression}")
    )
    rules = [f.rule_id for f in result.flags]
    assert ("text.presence.contradiction" in rules) is flagged
