"""A report as every door receives it: the sections, or the raw text, and the one rule between them.

The API (``POST /check-report``, ``POST /studies/{uid}/reports``), the report service, HL7 intake,
``radcheck check-report`` and the evaluation tool all take a report as :class:`ReportInput`, so
the field names and the rule are written once:

* give either ``text`` (the raw report, whose FINDINGS / IMPRESSION / INDICATION / COMPARISON /
  TECHNIQUE headings are read from it) or the section fields, not both: a section field next to
  ``text`` is refused, never silently dropped (put it in the text under its heading instead);
* the report must have FINDINGS or IMPRESSION text, as fields or as headed sections of ``text``
  (unheaded text counts as FINDINGS; ``medvlm.reports.read_report`` checks this part, since it
  needs the parser). A blank field counts as absent.

This module imports nothing of the parser, so the evaluation tool's injectors (which must not use
the checker's parser) can share the field list and rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medvlm.errors import MedVLMError

__all__ = ["REPORT_FIELDS", "SECTION_FIELDS", "ReportInput", "ReportInputError"]

SECTION_FIELDS: tuple[str, ...] = (
    "findings",
    "impression",
    "indication",
    "comparison",
    "technique",
)
"""The section fields, in the order a report is written (``medvlm.reports.SectionName`` values)."""
REPORT_FIELDS: tuple[str, ...] = (*SECTION_FIELDS, "text")
"""Every report field a door accepts: the sections and the raw ``text``."""

NO_FINDINGS_IN_TEXT = (
    "No FINDINGS or IMPRESSION section found in 'text': label the sections "
    "(e.g. 'FINDINGS: ... IMPRESSION: ...') or send them as separate fields."
)


class ReportInputError(MedVLMError, ValueError):
    """A report cannot be read as given (the message names the field and how to fix it)."""


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


@dataclass(frozen=True, slots=True)
class ReportInput:
    """Either the sections or the raw ``text`` of one report, as received (not yet validated)."""

    findings: str | None = None
    impression: str | None = None
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    text: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ReportInput:
        """The report fields of ``values`` (other keys are the caller's); each a string or null."""
        picked: dict[str, str | None] = {}
        for name in REPORT_FIELDS:
            value = values.get(name)
            if value is not None and not isinstance(value, str):
                raise ReportInputError(
                    f"field {name!r} must be a string or null, got {type(value).__name__}"
                )
            picked[name] = value
        return cls(**picked)

    def to_dict(self) -> dict[str, str | None]:
        """Every report field (``REPORT_FIELDS``), null where not given: the API request body."""
        return {name: getattr(self, name) for name in REPORT_FIELDS}

    def parts(self) -> list[str | None]:
        """Every text part, for a size limit over the whole report."""
        return [getattr(self, name) for name in REPORT_FIELDS]

    def sections(self) -> dict[str, str | None]:
        """The section fields as given (``SECTION_FIELDS``)."""
        return {name: getattr(self, name) for name in SECTION_FIELDS}

    def check_shape(self) -> None:
        """``ReportInputError`` unless the fields follow the rule (``text`` is not parsed here)."""
        if self.text is not None:
            given = [name for name in SECTION_FIELDS if not _blank(getattr(self, name))]
            if given:
                raise ReportInputError(
                    f"Give either 'text' (the raw report) or the section fields, not both: got "
                    f"'text' with {', '.join(repr(g) for g in given)}. Put each section in the "
                    "text under its heading (e.g. 'INDICATION: ...'), or send every section, "
                    "findings and impression included, as its own field."
                )
            if not self.text.strip():
                raise ReportInputError("'text' is empty: send the report text or its sections.")
        elif _blank(self.findings) and _blank(self.impression):
            raise ReportInputError(
                "The report has neither 'findings' nor 'impression' nor 'text': send at least one."
            )
