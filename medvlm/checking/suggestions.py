"""Suggested corrections for text flags (issue 12.4): shown to the radiologist, never applied.

A contradiction has two readings: the flagged sentence is wrong, or its counterpart is. Both are
offered, the flagged sentence first (the one the rest of the report disagrees with, or FINDINGS on
a tie); each says which sentence would change and, for a side or a grade, the rewritten sentence.
"""

from __future__ import annotations

import re
from typing import Any

from medvlm.checking.evidence import Item
from medvlm.reports import Presence, Side
from medvlm.taxonomy import ErrorSubtype

__all__ = ["suggestions_for"]

_SIDE_WORD = re.compile(r"(?<![\w-])(left|right)(?![\w-])", re.I)
_GRADE_WORD = re.compile(
    r"(?<![\w-])(trace|minimal|tiny|small|mild|mildly|slight|slightly|moderate|moderately|"
    r"large|severe|severely|marked|markedly|extensive|massive)(?![\w-])",
    re.I,
)


def _keep_case(src: str, word: str) -> str:
    if src.isupper():
        return word.upper()
    return word[:1].upper() + word[1:] if src[:1].isupper() else word


def _side_rewrite(item: Item, side: Side) -> str | None:
    if side not in (Side.LEFT, Side.RIGHT):
        return None
    new = side.value
    text = item.sentence.text
    if item.mention.dominant is not None:  # "left larger than right": exchange the two sides
        swap = {"left": "right", "right": "left"}
        out = _SIDE_WORD.sub(lambda m: _keep_case(m.group(1), swap[m.group(1).lower()]), text)
    else:
        out = _SIDE_WORD.sub(lambda m: _keep_case(m.group(1), new), text)
    return out if out != text else None


def _grade_rewrite(item: Item, word: str | None) -> str | None:
    if not word:
        return None
    text = item.sentence.text
    rel = item.mention.start - item.sentence.start
    found = [m for m in _GRADE_WORD.finditer(text, 0, max(rel, 0) + len(item.mention.text))]
    if not found:
        return None
    m = found[-1]
    return text[: m.start()] + _keep_case(m.group(1), word) + text[m.end() :]


def _grade_word(item: Item) -> str | None:
    text = item.sentence.text
    rel = item.mention.start - item.sentence.start
    found = [m.group(1).lower() for m in _GRADE_WORD.finditer(text, 0, max(rel, 0))]
    if found:
        return found[-1]
    return item.mention.severity.split(" to ")[0] if item.mention.severity else None


def _one(item: Item, change: str, suggested: str | None) -> dict[str, Any]:
    return {
        "section": item.section.value,
        "sentence_index": item.sentence.index,
        "original": item.sentence.text,
        "suggested": suggested,
        "change": change,
        "applied": False,
    }


def suggestions_for(subtype: ErrorSubtype, target: Item, other: Item) -> list[dict[str, Any]]:
    """Both readings of a contradiction between ``target`` (flagged) and ``other``."""
    t, o = target.mention, other.mention
    where_t, where_o = target.where(), other.where()
    if subtype is ErrorSubtype.LATERALITY:
        ts = t.dominant or t.laterality
        os_ = o.dominant or o.laterality
        if ts is None or os_ is None:
            return []
        return [
            _one(
                target,
                f"side: {ts.value} -> {os_.value} (as {where_o})",
                _side_rewrite(target, os_),
            ),
            _one(
                other, f"side: {os_.value} -> {ts.value} (as {where_t})", _side_rewrite(other, ts)
            ),
        ]
    if subtype is ErrorSubtype.SEVERITY:
        tw, ow = _grade_word(target), _grade_word(other)
        return [
            _one(target, f"grade: {tw} -> {ow} (as {where_o})", _grade_rewrite(target, ow)),
            _one(other, f"grade: {ow} -> {tw} (as {where_t})", _grade_rewrite(other, tw)),
        ]
    if subtype in (ErrorSubtype.NEGATION, ErrorSubtype.INSERT_FINDING):

        def state(p: Presence) -> str:
            return {"present": "present", "absent": "absent"}.get(p.value, "possible")

        return [
            _one(
                target,
                f"presence: state it {state(o.presence)} (as {where_o})"
                if o.concept == t.concept
                else f"presence: remove or qualify the finding (as {where_o} calls it normal)",
                None,
            ),
            _one(
                other,
                f"presence: state it {state(t.presence)} (as {where_t})"
                if o.concept == t.concept
                else f"presence: qualify the normal statement (as {where_t} reports a finding)",
                None,
            ),
        ]
    return []
