"""Typed rows: a corpus report (`ReportRecord`) and a labelled dataset row (`LabelledRow`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eval.errors import DatasetError
from medvlm.report_input import REPORT_FIELDS, ReportInput, ReportInputError
from medvlm.taxonomy import ComplexClass, ErrorSubtype

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRecord(ReportInput):
    """One report as read from a corpus, before any injection.

    A ``medvlm.report_input.ReportInput`` (its fields and rule: either the sections ``findings``,
    ``impression``, ... or the raw ``text``) with an id; a raw text report is split into sections
    with medvlm's parser when it is injected or checked. Fields are given by keyword.
    """

    id: str
    header: Mapping[str, Any] | None = None
    tags: tuple[str, ...] = ()
    """Hand-coded labels shipped with the corpus (IU: the MeSH ``<major>`` terms)."""


@dataclass(frozen=True, slots=True)
class LabelledRow:
    """One row of a labelled error-checking dataset (the JSONL shape `eval score` reads).

    ``sentence_index`` is the index of the modified sentence in the findings (medvlm's sentence
    splitter), ``span`` the ``[start, end)`` character offsets of the edit in the modified findings.
    Both are ``None`` for originals and for removed sentences (nothing left to point at).

    The report fields are ``medvlm.report_input.REPORT_FIELDS`` (kept positional after the labels,
    so they are spelled here; ``tests/app/test_report_doors.py`` fails when the lists drift).
    """

    id: str
    label_simple: str
    label_complex: ComplexClass
    findings: str | None = None
    impression: str | None = None
    indication: str | None = None
    comparison: str | None = None
    technique: str | None = None
    text: str | None = None
    header: Mapping[str, Any] | None = None
    subtype: ErrorSubtype | None = None
    sentence_index: int | None = None
    span: tuple[int, int] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        """Whether the row carries an error (SIMPLE label ``Y``)."""
        return self.label_simple == "Y"

    def report_input(self) -> ReportInput:
        """The row's report fields, as every RadCheck door takes them."""
        return ReportInput(**{name: getattr(self, name) for name in REPORT_FIELDS})

    def request(self) -> JSONDict:
        """The checker input: exactly the fields of the API request body."""
        return {
            **self.report_input().to_dict(),
            "header": dict(self.header) if self.header is not None else None,
        }

    def input_hash(self) -> str:
        """SHA-256 of the checker input (labels excluded): the row part of the cache key."""
        return sha256_json(self.request())

    @classmethod
    def from_dict(cls, row: Mapping[str, Any], where: str = "row") -> LabelledRow:
        """Validate one JSON object; ``where`` (e.g. ``file.jsonl:12``) goes into error messages."""
        rid = row.get("id")
        if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid) == "":
            raise DatasetError(f"{where}: missing or empty 'id'; every row needs a unique id")
        try:
            report = ReportInput.from_mapping(row)
            report.check_shape()
        except ReportInputError as exc:
            raise DatasetError(f"{where} (id {rid}): {exc}; fix the dataset row") from None
        simple = row.get("label_simple")
        if simple not in ("Y", "N"):
            raise DatasetError(
                f"{where} (id {rid}): label_simple must be 'Y' or 'N', got {simple!r}"
            )
        try:
            complex_ = ComplexClass(str(row.get("label_complex")))
        except ValueError:
            allowed = ", ".join(c.value for c in ComplexClass)
            raise DatasetError(
                f"{where} (id {rid}): label_complex must be one of {allowed}, "
                f"got {row.get('label_complex')!r}"
            ) from None
        if (simple == "N") != (complex_ is ComplexClass.ORIGINAL):
            raise DatasetError(
                f"{where} (id {rid}): label_simple {simple!r} contradicts label_complex "
                f"{complex_.value!r}; 'N' goes with 'original' only"
            )
        subtype_raw = row.get("subtype")
        subtype: ErrorSubtype | None = None
        if subtype_raw is not None:
            try:
                subtype = ErrorSubtype(subtype_raw)
            except ValueError:
                allowed = ", ".join(s.value for s in ErrorSubtype)
                raise DatasetError(
                    f"{where} (id {rid}): subtype must be one of {allowed} or null, "
                    f"got {subtype_raw!r}"
                ) from None
        index = row.get("sentence_index")
        if index is not None and (
            not isinstance(index, int) or isinstance(index, bool) or index < 0
        ):
            raise DatasetError(
                f"{where} (id {rid}): sentence_index must be a non-negative integer or null, "
                f"got {index!r}"
            )
        span_raw = row.get("span")
        span: tuple[int, int] | None = None
        if span_raw is not None:
            if not (
                isinstance(span_raw, list | tuple)
                and len(span_raw) == 2
                and all(isinstance(v, int) for v in span_raw)
            ):
                raise DatasetError(
                    f"{where} (id {rid}): span must be [start, end] integers or null, "
                    f"got {span_raw!r}"
                )
            span = (int(span_raw[0]), int(span_raw[1]))
        header = row.get("header")
        if header is not None and not isinstance(header, Mapping):
            raise DatasetError(f"{where} (id {rid}): header must be an object or null")
        known = {
            "id", *REPORT_FIELDS, "header",
            "label_simple", "label_complex", "subtype", "sentence_index", "span",
        }  # fmt: skip
        return cls(
            id=str(rid),
            label_simple=simple,
            label_complex=complex_,
            **report.to_dict(),
            header=dict(header) if header is not None else None,
            subtype=subtype,
            sentence_index=index,
            span=span,
            extra={k: v for k, v in row.items() if k not in known},
        )


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(value: Any) -> str:
    """SHA-256 hex digest of `canonical_json`."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
