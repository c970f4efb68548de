"""STOW-RS boundaries: liberal on length (real senders exceed RFC 2046's 70), bounded, named."""

from __future__ import annotations

import pytest

from app.services.errors import InvalidInputError
from app.services.stow import MAX_BOUNDARY_CHARS, multipart_boundary

RELATED = 'multipart/related; type="application/dicom"; boundary='


def test_a_73_character_boundary_as_orthanc_sends_it_is_accepted() -> None:
    boundary = "b" * 73
    assert multipart_boundary(RELATED + boundary) == boundary


@pytest.mark.parametrize("boundary", ["", "x" * (MAX_BOUNDARY_CHARS + 1)])
def test_a_missing_or_absurd_boundary_is_refused_with_the_limit(boundary: str) -> None:
    with pytest.raises(InvalidInputError, match=f"1 to {MAX_BOUNDARY_CHARS} characters"):
        multipart_boundary(RELATED + boundary)
