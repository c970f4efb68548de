"""The evaluation tool's errors: one root (`EvalError`) and a few specific subclasses."""

from __future__ import annotations


class EvalError(Exception):
    """Root of every error the ``eval`` package raises on purpose."""


class CorpusError(EvalError):
    """A corpus could not be read (missing file, wrong format, duplicate ids)."""


class DatasetError(EvalError):
    """A labelled dataset row is malformed (missing field, unknown label)."""


class RunnerError(EvalError):
    """The checker could not be run on a row (service unreachable, bad response)."""


class MetricsError(EvalError):
    """Metrics could not be computed or compared (empty input, mismatched files)."""
