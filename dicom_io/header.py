"""Header facts and selection attributes from a pydicom Dataset (pydicom stays inside dicom_io)."""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, DT, TM

from dicom_io.instance import HeaderFacts, JSONValue

__all__ = [
    "SELECTION_KEYWORDS",
    "Elements",
    "HeaderView",
    "dataset_attributes",
    "header_facts",
    "int_value",
    "parse_age",
    "text_value",
]

# Keywords stored with every instance so that selection can run later from the database (plus the
# derived ``ViewCodeMeaning``). Rules that name other keywords see them as missing.
SELECTION_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "Modality",
    "ImageType",
    "ViewPosition",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SeriesNumber",
    "InstanceNumber",
    "SeriesDescription",
    "StudyDescription",
    "ProtocolName",
    "ImageLaterality",
    "Laterality",
    "PatientOrientation",
    "PresentationIntentType",
    "DerivationDescription",
    "ConversionType",
    "BurnedInAnnotation",
    "Manufacturer",
    "PatientPosition",
    "AcquisitionDeviceProcessingDescription",
    "SliceThickness",
)


class HeaderView:
    """Cached read access to a Dataset's top-level elements by keyword.

    Validation, header facts, attributes and eligibility read some elements several times; going
    through pydicom's keyword lookup each time costs more than the rest of the header work.
    """

    __slots__ = ("_cache", "_ds")

    def __init__(self, ds: Dataset) -> None:
        self._ds = ds
        self._cache: dict[str, Any] = {}

    def get(self, keyword: str) -> Any:
        """The element's value, or None when absent."""
        try:
            return self._cache[keyword]
        except KeyError:
            pass
        tag = _tag(keyword)
        value = self._ds[tag].value if tag is not None and tag in self._ds else None
        self._cache[keyword] = value
        return value


Elements = Dataset | HeaderView


@lru_cache(maxsize=512)
def _tag(keyword: str) -> int | None:
    return tag_for_keyword(keyword)


_PORTABLE = re.compile(r"\b(PORT(ABLE)?|BEDSIDE|MOBILE|PORTATIL)\b", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
# ViewCodeSequence (CID 4010) meanings, mapped onto ViewPosition's defined terms.
_VIEW_CODES = {
    "R-10214": "PA",
    "399348003": "PA",
    "R-10206": "AP",
    "399182000": "AP",
    "R-10232": "LL",
    "399173006": "LL",
    "R-10236": "RL",
    "399198007": "RL",
}


def _scalar(value: object) -> JSONValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # also pydicom's IS
        return int(value)
    if isinstance(value, float):  # also pydicom's DSfloat
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value)


def _json(value: object) -> JSONValue:
    if isinstance(value, MultiValue | list | tuple):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _empty(value: JSONValue) -> bool:
    return value is None or value == "" or value == []


def text_value(ds: Elements, keyword: str) -> str | None:
    """The element's value as stripped text, or None when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return None
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(v) for v in value)
    elif isinstance(value, bytes):
        text = value.decode("ascii", "replace")
    else:
        text = str(value)
    text = text.strip("\x00 ")
    return text or None


def int_value(ds: Elements, keyword: str) -> int | None:
    value = ds.get(keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _view_code(ds: Elements) -> tuple[str | None, str | None]:
    """(ViewPosition equivalent, CodeMeaning) from the first item of ViewCodeSequence."""
    seq = ds.get("ViewCodeSequence")
    if not seq:
        return None, None
    item = seq[0]
    code = text_value(item, "CodeValue")
    meaning = text_value(item, "CodeMeaning")
    view = _VIEW_CODES.get(code or "")
    if view is None and meaning:
        lowered = meaning.lower()
        if "postero-anterior" in lowered or "posteroanterior" in lowered:
            view = "PA"
        elif "antero-posterior" in lowered or "anteroposterior" in lowered:
            view = "AP"
        elif "lateral" in lowered:
            view = "RL" if "right" in lowered else "LL"
    return view, meaning


def dataset_attributes(ds: Elements) -> dict[str, JSONValue]:
    """The JSON-serialisable attributes series selection works on (absent or empty ones left out).

    Adds ``ViewCodeMeaning`` (from ViewCodeSequence) so rules can fall back on it when ViewPosition
    is missing.
    """
    out: dict[str, JSONValue] = {}
    for keyword in SELECTION_KEYWORDS:
        raw = ds.get(keyword)
        if raw is None:
            continue
        value = _json(raw)
        if not _empty(value):
            out[keyword] = value
    _, meaning = _view_code(ds)
    if meaning:
        out["ViewCodeMeaning"] = meaning
    return out


def parse_age(age: str | None) -> float | None:
    """Years from a PatientAge ('045Y', '006M', '003W', '010D'); None when malformed."""
    if not age:
        return None
    match = _AGE.match(age)
    if match is None:
        return None
    return round(int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()], 4)


def _date(ds: Elements, keyword: str) -> date | None:
    text = text_value(ds, keyword)
    if text is None:
        return None
    try:
        parsed = DA(text)
    except (TypeError, ValueError):
        return None
    return parsed if isinstance(parsed, date) else None


def _age_from_dates(ds: Elements) -> float | None:
    birth = _date(ds, "PatientBirthDate")
    when = _date(ds, "StudyDate") or _date(ds, "AcquisitionDate") or _date(ds, "ContentDate")
    if birth is None or when is None or when < birth:
        return None
    return round((when - birth).days / 365.25, 4)


def _acquisition_datetime(ds: Elements) -> datetime | None:
    text = text_value(ds, "AcquisitionDateTime")
    if text is not None:
        try:
            parsed = DT(text)
        except (TypeError, ValueError):
            parsed = None
        if isinstance(parsed, datetime):  # a plain datetime, not pydicom's DT subclass
            return datetime.combine(parsed.date(), parsed.timetz())
    for date_kw, time_kw in (
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        day = _date(ds, date_kw)
        if day is None:
            continue
        clock = time()
        time_text = text_value(ds, time_kw)
        if time_text is not None:
            try:
                parsed_time = TM(time_text)
            except (TypeError, ValueError):
                parsed_time = None
            if isinstance(parsed_time, time):
                clock = parsed_time
        return datetime.combine(day, clock)
    return None


def _portable(ds: Elements, view: str | None) -> bool | None:
    for keyword in (
        "StudyDescription",
        "SeriesDescription",
        "ProtocolName",
        "PerformedProcedureStepDescription",
    ):
        text = text_value(ds, keyword)
        if text and _PORTABLE.search(text):
            return True
    if view == "PA":
        return False
    return None


def header_facts(ds: Elements) -> HeaderFacts:
    """The typed header facts of ``ds``; malformed optional values become None, never an error."""
    sex = (text_value(ds, "PatientSex") or "").upper()
    view = (text_value(ds, "ViewPosition") or "").upper() or None
    if view is None:
        view, _ = _view_code(ds)
    age = parse_age(text_value(ds, "PatientAge"))
    if age is None:
        age = _age_from_dates(ds)
    laterality = text_value(ds, "ImageLaterality") or text_value(ds, "Laterality")
    return HeaderFacts(
        patient_sex=sex if sex in {"M", "F", "O"} else None,
        patient_age_years=age,
        view_position=view,
        image_laterality=laterality.upper() if laterality else None,
        body_part=(text_value(ds, "BodyPartExamined") or "").upper() or None,
        study_description=text_value(ds, "StudyDescription"),
        series_description=text_value(ds, "SeriesDescription"),
        acquisition_datetime=_acquisition_datetime(ds),
        manufacturer=text_value(ds, "Manufacturer"),
        modality=(text_value(ds, "Modality") or "").upper() or None,
        portable=_portable(ds, view),
        photometric=text_value(ds, "PhotometricInterpretation"),
        rows=int_value(ds, "Rows"),
        columns=int_value(ds, "Columns"),
    )
