"""The errors of :mod:`dicom_io`: one root, a few specific subclasses.

Messages follow pydicom's style: they name the element by tag and keyword, say what was found and
what was expected, and what to do about it. They never contain patient data.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "DicomIOError",
    "InvalidDicomError",
    "InvalidElementError",
    "LimitExceededError",
    "MissingElementError",
    "NotDicomError",
    "NotEligibleError",
    "SelectionRulesError",
    "TruncatedFileError",
    "UnsupportedTransferSyntaxError",
]


class DicomIOError(Exception):
    """Root of every error raised by :mod:`dicom_io`."""


class NotDicomError(DicomIOError):
    """The input is not a DICOM Part 10 file (no preamble and 'DICM' prefix, or no file meta)."""


class InvalidDicomError(DicomIOError):
    """The input looks like DICOM but cannot be parsed (corrupt element, bad length or encoding)."""


class TruncatedFileError(InvalidDicomError):
    """The file ends before the data it announces (typically a cut-off Pixel Data element)."""


class MissingElementError(DicomIOError):
    """A required element is absent or empty."""


class InvalidElementError(DicomIOError):
    """A required element is present but its value is unusable."""


class LimitExceededError(DicomIOError):
    """The file would expand past a configured bound (inflated data set, decoded pixels).

    ``limit`` is the bound in bytes; ``kind`` is ``inflated`` or ``pixel``.
    """

    def __init__(self, message: str, *, limit: int, kind: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.kind = kind


class UnsupportedTransferSyntaxError(DicomIOError):
    """No installed decoder handles the file's transfer syntax."""


class DecodeError(DicomIOError):
    """The pixel data could not be decoded (corrupt or truncated compressed stream)."""


class NotEligibleError(DicomIOError):
    """The instance cannot be the model image (colour, multi-frame, not a chest radiograph...)."""


class SelectionRulesError(DicomIOError):
    """A series-selection rules file is malformed."""
