"""Report error checking: text and header rules, model checks, fusion into explainable flags."""

from medvlm.checking.checker import RULESET_VERSION, Checker
from medvlm.checking.grounding import FilmContext, Grounding
from medvlm.checking.types import (
    CheckerConfig,
    CheckerConfigError,
    CheckerError,
    CheckerInputError,
    CheckResult,
    CheckTimeBudgetError,
    Flag,
    HeaderFacts,
    ModelAnswer,
)

__all__ = [
    "RULESET_VERSION",
    "CheckResult",
    "CheckTimeBudgetError",
    "Checker",
    "CheckerConfig",
    "CheckerConfigError",
    "CheckerError",
    "CheckerInputError",
    "FilmContext",
    "Flag",
    "Grounding",
    "HeaderFacts",
    "ModelAnswer",
]
