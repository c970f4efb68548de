"""Layouts the yardstick renders each report in (the shapes real reports come in).

A layout turns the sections of a report into what the checker is given, a
:class:`medvlm.report_input.ReportInput` as every RadCheck door takes it: either the sections
themselves (``iu_sections``, as the IU XML and the API's fields give them) or one raw ``text`` that
the checker must cut into sections and sentences itself. Written without medvlm's parser (the
import-linter contract on the injector modules covers this one too).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable

from medvlm.report_input import ReportInput

__all__ = ["IU_LAYOUTS", "LAYOUTS", "MIMIC_LAYOUTS", "render"]


_SENT = re.compile(r"(?<=[.!?])\s+(?=\S)")


def _sentences(text: str) -> list[str]:
    return [s for s in _SENT.split(text.strip()) if s]


def _redact(text: str) -> str:
    return text.replace("XXXX", "___")


def _wrap(text: str, width: int) -> str:
    return "\n".join(" " + line for line in textwrap.wrap(text, width))


def _numbered(text: str) -> str:
    return "\n".join(f" {k}. {s}" for k, s in enumerate(_sentences(text), 1))


def _iu(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    return ReportInput(findings=f, impression=i, indication=ind, comparison=comp)


def _findings_first(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    head = f"INDICATION: {ind}\n" if ind else ""
    head += f"COMPARISON: {comp}\n" if comp else ""
    return ReportInput(text=f"{head}FINDINGS: {f}\n\nIMPRESSION: {i}\n")


def _impression_first(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    head = f"Indication: {ind}\n" if ind else ""
    return ReportInput(text=f"{head}IMPRESSION:\n{i}\n\nFINDINGS:\n{f}\n")


def _no_space(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    glue = re.compile(r"(?<=[a-z)])\. (?=[A-Z])")
    return ReportInput(text=f"FINDINGS: {glue.sub('.', f)}\nIMPRESSION: {glue.sub('.', i)}\n")


def _mimic(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    parts = ["                                 FINAL REPORT", " EXAMINATION:  CHEST (PA AND LAT)"]
    if ind:
        parts.append(" INDICATION:  " + _redact(ind))
    if comp:
        parts.append(" COMPARISON:  " + _redact(comp))
    parts.append(" FINDINGS:\n \n" + _wrap(_redact(f), 66))
    parts.append(" IMPRESSION:\n \n" + _wrap(_redact(i), 66))
    return ReportInput(text="\n \n".join(parts) + "\n")


def _mimic_numbered(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    parts = ["FINAL REPORT", "EXAMINATION: CHEST (PORTABLE AP)"]
    if ind:
        parts.append("INDICATION: " + _redact(ind))
    parts.append("FINDINGS:\n" + _wrap(_redact(f), 72))
    parts.append("IMPRESSION:\n" + _numbered(_redact(i)))
    return ReportInput(text="\n\n".join(parts) + "\n")


def _mimic_tail(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    body = _mimic(f, i, ind, comp).text or ""
    tail = (
        " \n NOTIFICATION:  The findings were discussed with Dr. ___ by Dr. ___ on the telephone"
        " on ___ at 10:15 AM, 2 minutes after discovery of the findings.\n \n"
        " ADDENDUM:  Please note the patient's prior study was reviewed at the time of dictation.\n"
    )
    return ReportInput(text=body + tail)


def _wrapped_lines(f: str, i: str, ind: str | None, comp: str | None) -> ReportInput:
    return ReportInput(
        text="FINDINGS:\n"
        + _wrap(_redact(f), 48)
        + "\n\nIMPRESSION:\n"
        + _wrap(_redact(i), 48)
        + "\n"
    )


LAYOUTS: dict[str, Callable[[str, str, str | None, str | None], ReportInput]] = {
    "iu_sections": _iu,
    "findings_first": _findings_first,
    "impression_first": _impression_first,
    "no_space_after_period": _no_space,
    "mimic_wrapped": _mimic,
    "mimic_numbered_impression": _mimic_numbered,
    "mimic_notification_addendum": _mimic_tail,
    "wrapped_lines": _wrapped_lines,
}
IU_LAYOUTS = ("iu_sections", "findings_first", "impression_first", "no_space_after_period")
MIMIC_LAYOUTS = (
    "mimic_wrapped",
    "mimic_numbered_impression",
    "mimic_notification_addendum",
    "wrapped_lines",
)


def render(
    layout: str,
    findings: str,
    impression: str,
    indication: str | None = None,
    comparison: str | None = None,
) -> ReportInput:
    return LAYOUTS[layout](findings, impression, indication, comparison)
