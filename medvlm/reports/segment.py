"""Section and sentence segmentation for IU-style and MIMIC-style chest X-ray report text."""

from __future__ import annotations

import re

from medvlm.reports.model import SectionName

__all__ = ["MAX_SENTENCE_CHARS", "normalise_text", "split_sections", "split_sentences"]

MAX_SENTENCE_CHARS = 400
"""A "sentence" longer than this (a run-on list without periods, pasted text) is cut at its last
comma, semicolon or space before the limit, so that the per-sentence work of mention extraction
(cue scopes, clauses) stays bounded and parsing stays linear in the report's length. Real report
sentences are far shorter (IU: 99.9% under 250 characters)."""

_HEADER_NAMES: dict[str, SectionName] = {
    "findings": SectionName.FINDINGS,
    "finding": SectionName.FINDINGS,
    "impression": SectionName.IMPRESSION,
    "impressions": SectionName.IMPRESSION,
    "conclusion": SectionName.IMPRESSION,
    "conclusions": SectionName.IMPRESSION,
    "indication": SectionName.INDICATION,
    "indications": SectionName.INDICATION,
    "clinical indication": SectionName.INDICATION,
    "history": SectionName.INDICATION,
    "clinical history": SectionName.INDICATION,
    "reason for exam": SectionName.INDICATION,
    "reason for examination": SectionName.INDICATION,
    "reason for study": SectionName.INDICATION,
    "comparison": SectionName.COMPARISON,
    "comparisons": SectionName.COMPARISON,
    "technique": SectionName.TECHNIQUE,
    "examination": SectionName.TECHNIQUE,
    "exam": SectionName.TECHNIQUE,
    "procedure": SectionName.TECHNIQUE,
    "recommendation": SectionName.OTHER,
    "recommendations": SectionName.OTHER,
    "notification": SectionName.OTHER,
    "addendum": SectionName.OTHER,
    "wet read": SectionName.OTHER,
    "final report": SectionName.OTHER,
}
_HEADER_ALT = "|".join(sorted((re.escape(h) for h in _HEADER_NAMES), key=len, reverse=True))
# A header at the start of a line (any case, colon needed except FINAL REPORT) or an upper-case
# header with a colon anywhere in the text (MIMIC and some IU reports run headers inline).
_LINE_HEADER = re.compile(
    rf"(?im)^[ \t]*(?P<h>{_HEADER_ALT})[ \t]*(?::|$)|(?<![\w])(?P<u>(?-i:{_HEADER_ALT.upper()}))[ \t]*:"
)
_FINAL_REPORT = re.compile(r"(?im)^[ \t]*final report[ \t]*$")
_LIST_BREAK = re.compile(r"\n[ \t]*(?=(?:\d{1,2}[.)]|[-*\u2022])[ \t]+\S)")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_WS = re.compile(r"\s+")
_ABBREVIATIONS = frozenset(
    {
        "dr",
        "vs",
        "e.g",
        "i.e",
        "approx",
        "st",
        "mr",
        "mrs",
        "ms",
        "no",
        "fig",
        "cf",
        "etc",
        "ca",
        "a.m",
        "p.m",
    }
)
# A sentence ends at a period followed by space or the end; at a period glued to the next
# sentence ("effusion.No pneumothorax": a lower-case word or a redaction, then a capitalised word);
# and at a semicolon that joins two sentences.
_BOUNDARY = re.compile(
    r"[.!?]+(?=\s|$)|(?:(?<=[a-z]{2})|(?<=XXXX)|(?<=___)|(?<=[a-z]\)))[.!?]+(?=[A-Z][a-z]|[A-Z] |XXXX)"
    r"|;(?=\s+\S)"
)
# A line break without a period before a capitalised word ends a sentence unless the line ends
# with a word that needs its continuation ("with", "the", a comma): reports typed as one finding
# per line ("Cardiomegaly" / "No effusion") next to wrapped prose.
_LINE_SENTENCE = re.compile(r"(?<=[^\s.,;:!?(\-/])[ \t]*\n[ \t]*(?=[A-Z][a-z])")
_CONTINUATION = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "or",
        "with",
        "without",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "than",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "no",
        "not",
        "nor",
        "but",
        "which",
        "that",
        "left",
        "right",
        "mild",
        "moderate",
        "small",
        "large",
        "severe",
        "dr",
    ]
)
_LIST_MARKER = re.compile(r"(?:\(?\d{1,2}[.)]|[-*\u2022])\s+")


def normalise_text(text: str) -> str:
    """Join wrapped lines, keep list items and paragraphs as sentence breaks, collapse spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    def _break(match: re.Match[str]) -> str:
        return " \x00 "

    text = _PARAGRAPH.sub(_break, text)
    text = _LIST_BREAK.sub(_break, text)

    def _line(match: re.Match[str]) -> str:
        line_start = text.rfind("\n", 0, match.start()) + 1
        words = text[line_start : match.start()].split()
        last = words[-1].lower() if words else ""
        return match.group(0) if last in _CONTINUATION else " \x00 "

    text = _LINE_SENTENCE.sub(_line, text)
    parts = [p.strip() for p in _WS.sub(" ", text).split("\x00")]
    out: list[str] = []
    for part in parts:
        if not part:
            continue
        if out and not out[-1].endswith((".", "!", "?", ":")):
            out[-1] += "."
        out.append(part)
    return " ".join(out).strip()


def split_sections(text: str) -> list[tuple[SectionName, str]]:
    """Cut raw report text at its headers; text before any header is FINDINGS when no header exists."""
    text = _FINAL_REPORT.sub("\n", text)
    matches = list(_LINE_HEADER.finditer(text))
    if not matches:
        body = text.strip()
        return [(SectionName.FINDINGS, body)] if body else []
    out: list[tuple[SectionName, str]] = []
    preamble = text[: matches[0].start()].strip()
    if preamble:
        out.append((SectionName.OTHER, preamble))
    for i, match in enumerate(matches):
        header = (match.group("h") or match.group("u") or "").lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        out.append((_HEADER_NAMES.get(header, SectionName.OTHER), text[match.end() : end].strip()))
    return out


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) in normalised text; list markers ("1.") are left out of spans."""
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(text)
    for match in _BOUNDARY.finditer(text):
        end = match.end()
        word_start = match.start()
        while word_start > start and not text[word_start - 1].isspace():
            word_start -= 1
        token = text[word_start : match.start()].lower()
        if token in _ABBREVIATIONS and end < n:
            continue
        if token.isdigit() and len(token) <= 2 and not text[start:word_start].strip():
            continue  # a list marker such as "1." at the start of a sentence
        spans.append((start, end))
        start = end
    if start < n:
        spans.append((start, n))
    out: list[tuple[int, int]] = []
    for s, e in _bounded(text, spans):
        while s < e and text[s].isspace():
            s += 1
        marker = _LIST_MARKER.match(text, s, e)
        if marker:
            s = marker.end()
        while e > s and text[e - 1].isspace():
            e -= 1
        if any(ch.isalnum() for ch in text[s:e]):
            out.append((s, e))
    return out


def _bounded(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` with every span longer than :data:`MAX_SENTENCE_CHARS` cut into pieces."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        while e - s > MAX_SENTENCE_CHARS:
            limit = s + MAX_SENTENCE_CHARS
            cut = max(text.rfind(",", s, limit), text.rfind(";", s, limit))
            if cut <= s + MAX_SENTENCE_CHARS // 4:
                cut = text.rfind(" ", s, limit)
            if cut <= s:
                cut = limit - 1
            out.append((s, cut + 1))
            s = cut + 1
        out.append((s, e))
    return out
