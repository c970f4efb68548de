"""Series selection: which instance of a study becomes the model image, and why.

Rules are configuration (JSON or YAML), in the spirit of MONAI Deploy's series selector: ordered
tiers of conditions on DICOM attributes (regex, lists, negation, ranges, presence). Selection runs
on stored attributes (:attr:`DicomInstance.attributes`), so it needs no file. Every candidate gets a
human-readable reason: why chosen, why ranked lower, or why skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydicom.datadict import tag_for_keyword

from dicom_io.errors import SelectionRulesError
from dicom_io.instance import DicomInstance, Eligibility, InstanceKind, JSONValue

__all__ = [
    "CandidateReason",
    "Condition",
    "EligibilityPolicy",
    "EligibilityRule",
    "SelectionCandidate",
    "SelectionDecision",
    "SelectionRules",
    "SelectionTier",
    "select_image",
]

_DERIVED_KEYWORDS = {"ViewCodeMeaning"}  # added by dicom_io.header.dataset_attributes
_OPS = {"regex", "in", "contains", "contains_any", "range", "not"}


def _norm(value: JSONValue) -> str:
    return str(value).strip().upper()


def _values(value: JSONValue) -> list[JSONValue]:
    return list(value) if isinstance(value, list) else [value]


def _empty(value: JSONValue | None) -> bool:
    return (
        value is None
        or value == ""
        or value == []
        or (isinstance(value, list) and all(_empty(v) for v in value))
    )


def _show(value: JSONValue) -> str:
    if isinstance(value, list):
        return "\\".join(str(v) for v in value)
    return str(value)


class _Matcher(Protocol):
    def matches(self, values: list[JSONValue]) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class _Regex:
    pattern: re.Pattern[str]

    def matches(self, values: list[JSONValue]) -> bool:
        return any(self.pattern.search(str(v)) for v in values)

    def describe(self) -> str:
        return f"matching /{self.pattern.pattern}/"


@dataclass(frozen=True)
class _In:
    items: tuple[str, ...]

    def matches(self, values: list[JSONValue]) -> bool:
        return any(_norm(v) in self.items for v in values)

    def describe(self) -> str:
        return f"one of {', '.join(self.items)}"


@dataclass(frozen=True)
class _Contains:
    items: tuple[str, ...]
    any_: bool

    def matches(self, values: list[JSONValue]) -> bool:
        held = {_norm(v) for v in values}
        found = [item in held for item in self.items]
        return any(found) if self.any_ else all(found)

    def describe(self) -> str:
        return f"containing {'any of' if self.any_ else 'all of'} {', '.join(self.items)}"


@dataclass(frozen=True)
class _Range:
    low: float | None
    high: float | None

    def matches(self, values: list[JSONValue]) -> bool:
        for value in values:
            try:
                number = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue
            if (self.low is None or number >= self.low) and (
                self.high is None or number <= self.high
            ):
                return True
        return False

    def describe(self) -> str:
        return f"in the range [{self.low}, {self.high}]"


@dataclass(frozen=True)
class _Not:
    inner: _Matcher

    def matches(self, values: list[JSONValue]) -> bool:
        return not self.inner.matches(values)

    def describe(self) -> str:
        return f"not {self.inner.describe()}"


@dataclass(frozen=True)
class _All:
    parts: tuple[_Matcher, ...]

    def matches(self, values: list[JSONValue]) -> bool:
        return all(part.matches(values) for part in self.parts)

    def describe(self) -> str:
        return " and ".join(part.describe() for part in self.parts)


def _items(spec: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(spec, list)
        or not spec
        or not all(isinstance(v, str | int | float) for v in spec)
    ):
        raise SelectionRulesError(
            f"{where}: expected a non-empty list of strings or numbers, found {spec!r}"
        )
    return tuple(_norm(v) for v in spec)


def _matcher(spec: Any, where: str) -> _Matcher:
    if isinstance(spec, str):
        try:
            return _Regex(re.compile(spec, re.IGNORECASE))
        except re.error as exc:
            raise SelectionRulesError(
                f"{where}: invalid regex {spec!r} ({exc}); fix the pattern"
            ) from exc
    if isinstance(spec, list):
        return _In(_items(spec, where))
    if isinstance(spec, bool | int | float):
        return _In((_norm(spec),))
    if not isinstance(spec, dict) or not spec:
        raise SelectionRulesError(
            f"{where}: expected a regex, a list or a mapping of operators, found {spec!r}"
        )
    unknown = set(spec) - _OPS
    if unknown:
        raise SelectionRulesError(
            f"{where}: unknown operator(s) {sorted(unknown)}; expected some of {sorted(_OPS)}"
        )
    parts: list[_Matcher] = []
    for op, arg in spec.items():
        inner = f"{where}.{op}"
        if op == "regex":
            if not isinstance(arg, str):
                raise SelectionRulesError(f"{inner}: expected a regex string, found {arg!r}")
            parts.append(_matcher(arg, inner))
        elif op == "in":
            parts.append(_In(_items(arg, inner)))
        elif op in {"contains", "contains_any"}:
            parts.append(_Contains(_items(arg, inner), any_=op == "contains_any"))
        elif op == "range":
            if (
                not isinstance(arg, list)
                or len(arg) != 2
                or not all(v is None or isinstance(v, int | float) for v in arg)
                or (arg[0] is not None and arg[1] is not None and arg[0] > arg[1])
            ):
                raise SelectionRulesError(
                    f"{inner}: expected [low, high] numbers (null = open), found {arg!r}"
                )
            parts.append(_Range(arg[0], arg[1]))
        else:  # not
            parts.append(_Not(_matcher(arg, inner)))
    return parts[0] if len(parts) == 1 else _All(tuple(parts))


@dataclass(frozen=True)
class Condition:
    """One attribute condition; :meth:`failure` says why a value does not satisfy it."""

    keyword: str
    matcher: _Matcher | None = None
    present: bool | None = None
    if_missing_passes: bool = False

    @classmethod
    def parse(cls, keyword: str, spec: Any, where: str) -> Condition:
        if keyword not in _DERIVED_KEYWORDS and tag_for_keyword(keyword) is None:
            raise SelectionRulesError(
                f"{where}: '{keyword}' is not a DICOM keyword (e.g. 'ViewPosition', 'Modality'); "
                "check its spelling against the DICOM data dictionary"
            )
        present: bool | None = None
        if_missing_passes = False
        if isinstance(spec, dict):
            spec = dict(spec)
            if "present" in spec:
                present = spec.pop("present")
                if not isinstance(present, bool):
                    raise SelectionRulesError(
                        f"{where}.present: expected true or false, found {present!r}"
                    )
            if "if_missing" in spec:
                mode = spec.pop("if_missing")
                if mode not in {"pass", "fail"}:
                    raise SelectionRulesError(
                        f"{where}.if_missing: expected 'pass' or 'fail', found {mode!r}"
                    )
                if_missing_passes = mode == "pass"
            if not spec:
                if present is None:
                    raise SelectionRulesError(f"{where}: the condition has no operator")
                return cls(keyword, None, present, if_missing_passes)
        return cls(keyword, _matcher(spec, where), present, if_missing_passes)

    def failure(self, attributes: Mapping[str, JSONValue]) -> str | None:
        """None when satisfied, else a sentence saying what was found and what was expected."""
        value = attributes.get(self.keyword)
        missing = _empty(value)
        if self.present is False:
            return None if missing else f"{self.keyword} is '{_show(value)}', expected it absent"
        if missing:
            if self.present or not self.if_missing_passes:
                wanted = self.matcher.describe() if self.matcher else "present"
                return f"{self.keyword} is missing, expected {wanted}"
            return None
        assert value is not None
        if self.matcher is None or self.matcher.matches(_values(value)):
            return None
        return f"{self.keyword} is '{_show(value)}', expected {self.matcher.describe()}"


def _conditions(spec: Any, where: str) -> tuple[Condition, ...]:
    if not isinstance(spec, dict) or not spec:
        raise SelectionRulesError(
            f"{where}: expected a mapping of DICOM keyword to condition, found {spec!r}"
        )
    return tuple(Condition.parse(str(k), v, f"{where}.{k}") for k, v in spec.items())


@dataclass(frozen=True)
class SelectionTier:
    """Conditions that must all hold, and ordered preferences to rank the candidates that pass."""

    name: str
    conditions: tuple[Condition, ...]
    prefer: tuple[tuple[Condition, ...], ...] = ()

    def failures(self, attributes: Mapping[str, JSONValue]) -> list[str]:
        return [f for f in (c.failure(attributes) for c in self.conditions) if f is not None]

    def preference_hits(self, attributes: Mapping[str, JSONValue]) -> tuple[bool, ...]:
        return tuple(all(c.failure(attributes) is None for c in group) for group in self.prefer)


@dataclass(frozen=True)
class EligibilityRule:
    """One requirement an image must meet to be shown to the model, and the reason when it fails.

    ``reason`` may hold ``{value}``: the attribute's value (upper case), or ``missing``.
    """

    condition: Condition
    reason: str

    def failure(self, attributes: Mapping[str, JSONValue]) -> str | None:
        if self.condition.failure(attributes) is None:
            return None
        value = attributes.get(self.condition.keyword)
        return self.reason.format(value="missing" if _empty(value) else _show(value).upper())


@dataclass(frozen=True)
class EligibilityPolicy:
    """The rules file's ``eligibility`` list: checked on every image when it is received.

    An image failing any rule is stored but never becomes the model image (its reasons are kept).
    """

    rules: tuple[EligibilityRule, ...]

    @classmethod
    def from_list(cls, spec: Any, where: str) -> EligibilityPolicy:
        if not isinstance(spec, list) or not spec:
            raise SelectionRulesError(
                f"{where}: expected a non-empty list of {{require: {{Keyword: condition}}, "
                f"reason: '...'}}, found {spec!r}"
            )
        rules: list[EligibilityRule] = []
        for index, item in enumerate(spec):
            at = f"{where}[{index}]"
            if not isinstance(item, Mapping) or set(item) != {"require", "reason"}:
                raise SelectionRulesError(f"{at}: expected keys require and reason, found {item!r}")
            conditions = _conditions(item["require"], f"{at}.require")
            if len(conditions) != 1:
                raise SelectionRulesError(
                    f"{at}.require: one DICOM keyword per rule (each has its own reason), "
                    f"found {len(conditions)}"
                )
            reason = item["reason"]
            try:
                ok = isinstance(reason, str) and bool(reason.format(value="x").strip())
            except (KeyError, IndexError, ValueError):
                ok = False
            if not ok:
                raise SelectionRulesError(
                    f"{at}.reason: expected a non-empty sentence (placeholder: {{value}}), "
                    f"found {reason!r}"
                )
            rules.append(EligibilityRule(conditions[0], reason))
        return cls(tuple(rules))

    def reasons(self, attributes: Mapping[str, JSONValue]) -> tuple[str, ...]:
        """Why an image with these attributes may not be the model image (empty: eligible)."""
        return tuple(r for r in (rule.failure(attributes) for rule in self.rules) if r is not None)


@dataclass(frozen=True)
class SelectionRules:
    """Ordered selection tiers; the first tier any eligible candidate satisfies decides."""

    name: str
    version: int | str
    tiers: tuple[SelectionTier, ...]
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    eligibility: EligibilityPolicy | None = None
    """Which images may be the model image at all (None: the packaged file's policy)."""

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SelectionRules:
        """Validate ``spec`` now (fail at start-up, not on the tenth study)."""
        if not isinstance(spec, Mapping):
            raise SelectionRulesError(
                f"selection rules: expected a mapping at the top, found {type(spec).__name__}"
            )
        name = spec.get("name")
        tiers_spec = spec.get("tiers")
        if not isinstance(name, str) or not name:
            raise SelectionRulesError("selection rules: 'name' must be a non-empty string")
        if not isinstance(tiers_spec, list) or not tiers_spec:
            raise SelectionRulesError(f"selection rules '{name}': 'tiers' must be a non-empty list")
        tiers: list[SelectionTier] = []
        for index, tier in enumerate(tiers_spec):
            where = f"{name}.tiers[{index}]"
            if not isinstance(tier, Mapping) or set(tier) - {"name", "conditions", "prefer"}:
                raise SelectionRulesError(
                    f"{where}: expected keys name, conditions, prefer; found {tier!r}"
                )
            prefer = tier.get("prefer") or []
            if not isinstance(prefer, list):
                raise SelectionRulesError(f"{where}.prefer: expected a list of conditions")
            tiers.append(
                SelectionTier(
                    name=str(tier.get("name") or f"tier {index + 1}"),
                    conditions=_conditions(tier.get("conditions"), f"{where}.conditions"),
                    prefer=tuple(
                        _conditions(p, f"{where}.prefer[{i}]") for i, p in enumerate(prefer)
                    ),
                )
            )
        eligibility = (
            EligibilityPolicy.from_list(spec["eligibility"], f"{name}.eligibility")
            if spec.get("eligibility") is not None
            else None
        )
        return cls(name, spec.get("version", 1), tuple(tiers), dict(spec), eligibility)

    def eligibility_policy(self) -> EligibilityPolicy:
        """This file's ``eligibility`` list, or the packaged default's when it has none."""
        if self.eligibility is not None:
            return self.eligibility
        default = _default_rules().eligibility
        if default is None:
            raise SelectionRulesError("the packaged default_selection.yaml has no eligibility list")
        return default

    @classmethod
    def from_json(cls, text: str) -> SelectionRules:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SelectionRulesError(f"selection rules: invalid JSON ({exc})") from exc
        return cls.from_dict(spec)

    @classmethod
    def from_yaml(cls, text: str) -> SelectionRules:
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SelectionRulesError(f"selection rules: invalid YAML ({exc})") from exc
        return cls.from_dict(spec)

    @classmethod
    def load(cls, path: Path) -> SelectionRules:
        """Load a ``.json``, ``.yaml`` or ``.yml`` rules file."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SelectionRulesError(f"Unable to read selection rules '{path}': {exc}") from exc
        return cls.from_json(text) if path.suffix.lower() == ".json" else cls.from_yaml(text)

    @classmethod
    def default(cls) -> SelectionRules:
        """The shipped rules: an original frontal chest radiograph, PA preferred over AP."""
        return _default_rules()

    def to_dict(self) -> dict[str, Any]:
        return dict(self.spec)

    def keywords(self) -> set[str]:
        """Every DICOM keyword the rules look at (to check against what is stored)."""
        return {
            c.keyword
            for tier in self.tiers
            for c in (*tier.conditions, *(c for group in tier.prefer for c in group))
        }


@lru_cache(maxsize=1)
def _default_rules() -> SelectionRules:
    text = (
        resources.files("dicom_io")
        .joinpath("data/default_selection.yaml")
        .read_text(encoding="utf-8")
    )
    return SelectionRules.from_yaml(text)


@dataclass(frozen=True)
class SelectionCandidate:
    """What selection needs to know of one stored instance (no file, no pydicom)."""

    sop_instance_uid: str
    series_instance_uid: str
    kind: InstanceKind
    attributes: Mapping[str, JSONValue]
    eligibility: Eligibility

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", InstanceKind(self.kind))

    @classmethod
    def from_instance(cls, instance: DicomInstance) -> SelectionCandidate:
        return cls(
            instance.sop_instance_uid,
            instance.series_instance_uid,
            instance.kind,
            instance.attributes,
            instance.eligibility,
        )


@dataclass(frozen=True)
class CandidateReason:
    sop_instance_uid: str
    chosen: bool
    reason: str

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "chosen": self.chosen,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SelectionDecision:
    """The chosen SOP Instance UID (or None) and one reason per candidate, in candidate order."""

    chosen: str | None
    reasons: list[CandidateReason]
    rules_name: str
    rules_version: int | str
    tier: str | None

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "chosen": self.chosen,
            "rules": {"name": self.rules_name, "version": self.rules_version},
            "tier": self.tier,
            "reasons": [r.to_dict() for r in self.reasons],
        }


def _summary(tier: SelectionTier, attributes: Mapping[str, JSONValue]) -> str:
    shown = [
        f"{c.keyword}={_show(attributes[c.keyword])}"
        for c in tier.conditions
        if c.keyword in attributes
        and not _empty(attributes[c.keyword])
        and c.keyword != "SOPClassUID"
    ]
    return ", ".join(shown) or "no distinguishing attributes"


def _pixels(attributes: Mapping[str, JSONValue]) -> int:
    try:
        return int(attributes.get("Rows") or 0) * int(attributes.get("Columns") or 0)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def select_image(
    candidates: Sequence[SelectionCandidate], rules: SelectionRules | None = None
) -> SelectionDecision:
    """Choose the model image among ``candidates`` (rules default to the shipped ones)."""
    rules = rules or SelectionRules.default()
    reasons: dict[str, str] = {}
    pool: list[SelectionCandidate] = []
    for cand in candidates:
        if cand.kind is not InstanceKind.IMAGE:
            reasons[cand.sop_instance_uid] = (
                f"skipped: a {cand.kind.value.replace('_', ' ')} is not an image"
            )
        elif not cand.eligibility.eligible:
            why = "; ".join(cand.eligibility.reasons) or "no reason recorded"
            reasons[cand.sop_instance_uid] = f"skipped: not eligible as the model image ({why})"
        else:
            pool.append(cand)

    primary = rules.tiers[0]
    tier: SelectionTier | None = None
    matched: list[SelectionCandidate] = []
    for candidate_tier in rules.tiers:
        matched = [c for c in pool if not candidate_tier.failures(c.attributes)]
        if matched:
            tier = candidate_tier
            break

    chosen: str | None = None
    if tier is not None:

        def rank(c: SelectionCandidate) -> tuple[tuple[bool, ...], int, str]:
            hits = tier.preference_hits(c.attributes)
            return tuple(not h for h in hits), -_pixels(c.attributes), c.sop_instance_uid

        ranked = sorted(matched, key=rank)
        winner = ranked[0]
        chosen = winner.sop_instance_uid
        win_hits = tier.preference_hits(winner.attributes)
        fallback = "" if tier is primary else " (fallback: no candidate met the primary rule)"
        reasons[chosen] = (
            f"chosen by rule '{tier.name}'{fallback}: {_summary(tier, winner.attributes)}"
        )
        for cand in ranked[1:]:
            hits = tier.preference_hits(cand.attributes)
            lost = [
                "; ".join(f for f in (c.failure(cand.attributes) for c in group) if f)
                for group, won, had in zip(tier.prefer, win_hits, hits, strict=True)
                if won and not had
            ]
            why = f"not preferred ({lost[0]})" if lost else "fewer pixels or later SOP Instance UID"
            reasons[cand.sop_instance_uid] = (
                f"matched rule '{tier.name}' but ranked below {chosen}: {why}"
            )
    for cand in pool:
        if cand.sop_instance_uid in reasons:
            continue
        why = "; ".join(primary.failures(cand.attributes))
        if tier is None:
            reasons[cand.sop_instance_uid] = (
                f"skipped: {why} (rule '{primary.name}'); no fallback rule matched either"
            )
        else:
            reasons[cand.sop_instance_uid] = f"skipped: {why} (rule '{primary.name}')"

    return SelectionDecision(
        chosen=chosen,
        reasons=[
            CandidateReason(
                c.sop_instance_uid, c.sop_instance_uid == chosen, reasons[c.sop_instance_uid]
            )
            for c in candidates
        ],
        rules_name=rules.name,
        rules_version=rules.version,
        tier=tier.name if tier else None,
    )
