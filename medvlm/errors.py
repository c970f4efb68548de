"""The error hierarchy of the ``medvlm`` package.

Every error raised on purpose by ``medvlm`` derives from :class:`MedVLMError`, so callers (the
API's error table, the worker) can catch the package's failures with one clause. Specific subclasses
name the stage that failed. Errors carry no HTTP status; messages say what failed, why, with the
offending value, and what to do.
"""

from __future__ import annotations

__all__ = ["BudgetError", "MedVLMError", "ProcessingError", "SlicingError"]


class MedVLMError(Exception):
    """Root of every error raised on purpose by the ``medvlm`` package."""


class SlicingError(MedVLMError, ValueError):
    """A slicing plan could not be made (bad image size or slicing parameters)."""


class ProcessingError(MedVLMError, ValueError):
    """An image could not be turned into model input (bad image, bad processor config, bad box)."""


class BudgetError(MedVLMError, ValueError):
    """Visual tokens could not be brought within the visual-token budget."""
