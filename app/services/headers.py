"""Header facts once (issue 9, item 2): the one explicit mapping from dicom_io's header facts (read
from the file, stored as JSON with the instance) onto the checker's, and the one DICOM age parser.

Every field of :class:`dicom_io.HeaderFacts` is listed: mapped to the checker field it feeds, or to
``None`` with the reason it is not checked. ``tests/app/services/test_headers.py`` fails when a field is added
to or renamed on either side (or on the API's ``HeaderIn``) without updating this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import dicom_io
from medvlm.checking import HeaderFacts

__all__ = ["CHECKER_FIELD_OF_DICOM", "checker_facts", "checker_facts_from_dicom"]

CHECKER_FIELD_OF_DICOM: Mapping[str, str | None] = MappingProxyType(
    {
        "patient_sex": "patient_sex",
        "patient_age_years": "patient_age_years",
        "view_position": "view_position",
        "image_laterality": "image_laterality",
        "body_part": "body_part",
        "portable": "portable",
        "modality": "modality",
        # Not compared with the report text (no rule reads them):
        "study_description": None,  # free text; portable/bedside wording is already in `portable`
        "series_description": None,  # idem
        "acquisition_datetime": None,  # interval wording is checked against the report's comparison
        "manufacturer": None,
        "photometric": None,  # a pixel-pipeline fact (MONOCHROME1 inversion)
        "rows": None,
        "columns": None,
    }
)
"""dicom_io field -> checker field (``None``: deliberately not checked)."""


def checker_facts_from_dicom(header: Mapping[str, Any]) -> HeaderFacts:
    """The checker's header facts from dicom_io's (``dicom_io.HeaderFacts.to_dict()``, as stored).

    Keys of an older stored header that the table no longer lists are ignored.
    """
    return checker_facts(
        {
            checker: header[dicom]
            for dicom, checker in CHECKER_FIELD_OF_DICOM.items()
            if checker is not None and dicom in header
        }
    )


def checker_facts(raw: Mapping[str, Any]) -> HeaderFacts:
    """The checker's header facts from a JSON object (snake_case or DICOM keywords); a DICOM age
    string ('045Y') is read by :func:`dicom_io.parse_age`, the one DICOM age parser."""
    return HeaderFacts.from_dict(raw, parse_age=dicom_io.parse_age)
