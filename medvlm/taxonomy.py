"""The shared error taxonomy (DESIGN.md): one list for rules, models, evaluation and the UI."""

from __future__ import annotations

from enum import StrEnum


class ErrorSubtype(StrEnum):
    """What kind of error a flag reports."""

    LATERALITY = "laterality"
    NEGATION = "negation"
    SEVERITY = "severity"
    LOCATION = "location"
    MEASUREMENT = "measurement"
    INTERVAL = "interval"
    INSERT_FINDING = "insert_finding"
    REMOVE_FINDING = "remove_finding"
    HEADER_MISMATCH = "header_mismatch"


class ComplexClass(StrEnum):
    """The paper's COMPLEX levels (arXiv 2312.13103)."""

    ORIGINAL = "original"
    INSERT = "insert"
    REMOVE = "remove"
    SUBSTITUTE = "substitute"


class Severity(StrEnum):
    """How urgently a radiologist should look at a flag."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class FlagSource(StrEnum):
    """Which family of checks raised a flag."""

    TEXT_RULE = "text_rule"
    HEADER_RULE = "header_rule"
    MODEL = "model"


COMPLEX_CLASS_OF: dict[ErrorSubtype, ComplexClass] = {
    ErrorSubtype.LATERALITY: ComplexClass.SUBSTITUTE,
    ErrorSubtype.NEGATION: ComplexClass.SUBSTITUTE,
    ErrorSubtype.SEVERITY: ComplexClass.SUBSTITUTE,
    ErrorSubtype.LOCATION: ComplexClass.SUBSTITUTE,
    ErrorSubtype.MEASUREMENT: ComplexClass.SUBSTITUTE,
    ErrorSubtype.INTERVAL: ComplexClass.SUBSTITUTE,
    ErrorSubtype.INSERT_FINDING: ComplexClass.INSERT,
    ErrorSubtype.REMOVE_FINDING: ComplexClass.REMOVE,
    ErrorSubtype.HEADER_MISMATCH: ComplexClass.SUBSTITUTE,
}
