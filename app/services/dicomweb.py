"""QIDO-RS searches and WADO-RS lookups over RadCheck's own store (PS3.18 10.6 and 10.4).

Matching keys (by keyword or by tag, e.g. ``PatientID`` or ``00100020``):

- study level: StudyInstanceUID (comma-separated list), PatientID, PatientName and
  StudyDescription (``*`` and ``?`` wildcards, case-insensitive), StudyDate (``20240101``,
  ``20240101-20241231``, ``-20241231``, ``20240101-``), AccessionNumber, ModalitiesInStudy
  (comma-separated list: any of them);
- series level: SeriesInstanceUID, Modality (list), SeriesNumber;
- instance level: SOPInstanceUID, SOPClassUID (list), InstanceNumber.

``limit`` (at most 1,000), ``offset``, ``includefield`` (keywords or ``all``) and ``fuzzymatching``
(accepted, ignored) are the other parameters. Anything else is a clear 400 naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import Instance, Series, Study
from app.services.errors import InvalidInputError, NotFoundError
from dicom_io import QIDO_ATTRIBUTES, dataset_json

__all__ = [
    "MAX_LIMIT",
    "QidoQuery",
    "StoredObject",
    "parse_qido",
    "retrievable",
    "search_instances",
    "search_series",
    "search_studies",
]

MAX_LIMIT = 1000

STUDY_KEYS = {
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
}
SERIES_KEYS = {"SeriesInstanceUID", "Modality", "SeriesNumber"}
INSTANCE_KEYS = {"SOPInstanceUID", "SOPClassUID", "InstanceNumber"}
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
TAG_TO_KEYWORD = {tag: keyword for keyword, (tag, _vr) in QIDO_ATTRIBUTES.items()}
# Extra instance-level fields available for includefield (from the stored selection attributes).
INSTANCE_EXTRA = ("Rows", "Columns", "ViewPosition", "BodyPartExamined", "ImageType")


@dataclass(frozen=True)
class QidoQuery:
    filters: dict[str, str] = field(default_factory=dict)
    limit: int = 100
    offset: int = 0
    include: frozenset[str] = frozenset()
    include_all: bool = False


def parse_qido(params: Sequence[tuple[str, str]], level: str) -> QidoQuery:
    """Validate QIDO-RS query parameters for ``level`` (study, series or instance)."""
    allowed = set(STUDY_KEYS)
    if level in ("series", "instance"):
        allowed |= SERIES_KEYS
    if level == "instance":
        allowed |= INSTANCE_KEYS
    filters: dict[str, str] = {}
    include: set[str] = set()
    include_all = False
    limit, offset = 100, 0
    for raw_key, value in params:
        key = TAG_TO_KEYWORD.get(raw_key.upper(), raw_key)
        if key == "limit" or key == "offset":
            if not value.isdigit():
                raise InvalidInputError(f"{key}={value[:20]!r}: must be a non-negative integer.")
            number = int(value)
            if key == "limit":
                if not 1 <= number <= MAX_LIMIT:
                    raise InvalidInputError(f"limit must be between 1 and {MAX_LIMIT}.")
                limit = number
            else:
                offset = number
        elif key == "includefield":
            for item in value.split(","):
                name = TAG_TO_KEYWORD.get(item.strip().upper(), item.strip())
                if name == "all":
                    include_all = True
                elif name in QIDO_ATTRIBUTES:
                    include.add(name)
                else:
                    raise InvalidInputError(
                        f"includefield {item[:40]!r} is not an attribute RadCheck can return; "
                        f"use 'all' or one of: {', '.join(sorted(QIDO_ATTRIBUTES))}."
                    )
        elif key == "fuzzymatching":
            continue
        elif key in allowed:
            if len(value) > 200:
                raise InvalidInputError(f"The value of {key} is longer than 200 characters.")
            filters[key] = value
        else:
            raise InvalidInputError(
                f"{raw_key[:40]!r} is not a supported {level}-level matching key; use one of: "
                f"{', '.join(sorted(allowed | CONTROL))}."
            )
    if "StudyDate" in filters:
        _date_range(filters["StudyDate"])  # validate now
    return QidoQuery(filters, limit, offset, frozenset(include), include_all)


def _date_range(value: str) -> tuple[str | None, str | None]:
    match = re.fullmatch(r"(\d{8})?(-)?(\d{8})?", value.strip())
    if not match or not (match.group(1) or match.group(3)):
        raise InvalidInputError(
            f"StudyDate {value[:20]!r}: use YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-."
        )
    start, dash, end = match.groups()
    if not dash:
        return start, start
    return start, end


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _text_filter(column: Any, value: str) -> Any:
    if "*" in value or "?" in value:
        return func.lower(column).like(_like(value.lower()), escape="\\")
    return func.lower(column) == value.lower()


def _uids(value: str) -> list[str]:
    return [v.strip() for v in value.replace("\\", ",").split(",") if v.strip()]


def _study_filters(stmt: Any, f: Mapping[str, str]) -> Any:
    if "StudyInstanceUID" in f:
        stmt = stmt.where(Study.study_instance_uid.in_(_uids(f["StudyInstanceUID"])))
    if "PatientID" in f:
        stmt = stmt.where(_text_filter(Study.patient_id, f["PatientID"]))
    if "PatientName" in f:
        stmt = stmt.where(_text_filter(Study.patient_name, f["PatientName"]))
    if "StudyDescription" in f:
        stmt = stmt.where(_text_filter(Study.study_description, f["StudyDescription"]))
    if "AccessionNumber" in f:
        stmt = stmt.where(_text_filter(Study.accession_number, f["AccessionNumber"]))
    if "StudyDate" in f:
        start, end = _date_range(f["StudyDate"])
        if start:
            stmt = stmt.where(Study.study_date >= start)
        if end:
            stmt = stmt.where(Study.study_date <= end)
    if "ModalitiesInStudy" in f:
        wanted = [m.upper() for m in _uids(f["ModalitiesInStudy"])]
        stmt = stmt.where(Study.id.in_(select(Series.study_id).where(Series.modality.in_(wanted))))
    return stmt


def _series_filters(stmt: Any, f: Mapping[str, str]) -> Any:
    if "SeriesInstanceUID" in f:
        stmt = stmt.where(Series.series_instance_uid.in_(_uids(f["SeriesInstanceUID"])))
    if "Modality" in f:
        stmt = stmt.where(Series.modality.in_([m.upper() for m in _uids(f["Modality"])]))
    if "SeriesNumber" in f:
        stmt = stmt.where(Series.series_number == _int(f["SeriesNumber"], "SeriesNumber"))
    return stmt


def _int(value: str, key: str) -> int:
    if not value.lstrip("-").isdigit():
        raise InvalidInputError(f"{key}={value[:20]!r}: must be an integer.")
    return int(value)


def _pick(values: dict[str, object], q: QidoQuery, always: set[str]) -> dict[str, Any]:
    keep = {k: v for k, v in values.items() if k in always or q.include_all or k in q.include}
    return dataset_json(keep)


STUDY_ALWAYS = {
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "StudyDate",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "RetrieveURL",
}


def search_studies(session: Session, q: QidoQuery, base_url: str) -> list[dict[str, Any]]:
    """Studies matching ``q`` as DICOM JSON, ordered by StudyInstanceUID."""
    stmt = _study_filters(select(Study), q.filters)
    stmt = stmt.order_by(Study.id).limit(q.limit).offset(q.offset)
    studies = session.scalars(stmt).all()
    if not studies:
        return []
    ids = [s.id for s in studies]
    counts: dict[int, tuple[int, int]] = {}
    for study_id, n_series, n_inst in session.execute(
        select(
            Series.study_id,
            func.count(func.distinct(Series.id)),
            func.count(Instance.id),
        )
        .join(Instance, Instance.series_id == Series.id, isouter=True)
        .where(Series.study_id.in_(ids))
        .group_by(Series.study_id)
    ):
        counts[study_id] = (n_series, n_inst)
    modalities: dict[int, set[str]] = {}
    for study_id, modality in session.execute(
        select(Series.study_id, Series.modality).where(Series.study_id.in_(ids)).distinct()
    ):
        if modality:
            modalities.setdefault(study_id, set()).add(modality)
    out = []
    for s in studies:
        n_series, n_inst = counts.get(s.id, (0, 0))
        values: dict[str, object] = {
            "StudyInstanceUID": s.study_instance_uid,
            "PatientID": s.patient_id,
            "PatientName": s.patient_name,
            "StudyDate": s.study_date,
            "AccessionNumber": s.accession_number,
            "StudyDescription": s.study_description,
            "ModalitiesInStudy": sorted(modalities.get(s.id, set())),
            "NumberOfStudyRelatedSeries": n_series,
            "NumberOfStudyRelatedInstances": n_inst,
            "RetrieveURL": f"{base_url}/studies/{s.study_instance_uid}",
        }
        out.append(_pick(values, q, STUDY_ALWAYS))
    return out


SERIES_ALWAYS = {
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "RetrieveURL",
}


def search_series(
    session: Session, q: QidoQuery, base_url: str, study_uid: str | None = None
) -> list[dict[str, Any]]:
    """Series matching ``q`` (within ``study_uid`` when given) as DICOM JSON."""
    filters = dict(q.filters)
    if study_uid is not None:
        filters["StudyInstanceUID"] = study_uid
    stmt: Any = select(Series, Study).join(Study, Series.study_id == Study.id)
    stmt = _series_filters(_study_filters(stmt, filters), filters)
    rows: list[tuple[Series, Study]] = list(
        session.execute(stmt.order_by(Series.id).limit(q.limit).offset(q.offset)).all()
    )
    if not rows:
        return []
    series_ids = [se.id for se, _ in rows]
    counts: dict[int, int] = {
        series_id: n
        for series_id, n in session.execute(
            select(Instance.series_id, func.count(Instance.id))
            .where(Instance.series_id.in_(series_ids))
            .group_by(Instance.series_id)
        )
    }
    out = []
    for se, st in rows:
        values: dict[str, object] = {
            "StudyInstanceUID": st.study_instance_uid,
            "SeriesInstanceUID": se.series_instance_uid,
            "Modality": se.modality,
            "SeriesNumber": se.series_number,
            "NumberOfSeriesRelatedInstances": counts.get(se.id, 0),
            "RetrieveURL": f"{base_url}/studies/{st.study_instance_uid}/series/"
            f"{se.series_instance_uid}",
            **_study_values(st),
        }
        out.append(_pick(values, q, SERIES_ALWAYS))
    return out


def _study_values(st: Study) -> dict[str, object]:
    return {
        "PatientID": st.patient_id,
        "PatientName": st.patient_name,
        "StudyDate": st.study_date,
        "AccessionNumber": st.accession_number,
        "StudyDescription": st.study_description,
    }


INSTANCE_ALWAYS = {
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "RetrieveURL",
}


def search_instances(
    session: Session,
    q: QidoQuery,
    base_url: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[dict[str, Any]]:
    """Instances matching ``q`` (within the study / series when given) as DICOM JSON."""
    filters = dict(q.filters)
    if study_uid is not None:
        filters["StudyInstanceUID"] = study_uid
    if series_uid is not None:
        filters["SeriesInstanceUID"] = series_uid
    stmt: Any = (
        select(Instance, Series, Study)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
    )
    stmt = _series_filters(_study_filters(stmt, filters), filters)
    if "SOPInstanceUID" in filters:
        stmt = stmt.where(Instance.sop_instance_uid.in_(_uids(filters["SOPInstanceUID"])))
    if "SOPClassUID" in filters:
        stmt = stmt.where(Instance.sop_class_uid.in_(_uids(filters["SOPClassUID"])))
    if "InstanceNumber" in filters:
        stmt = stmt.where(
            Instance.instance_number == _int(filters["InstanceNumber"], "InstanceNumber")
        )
    rows: list[tuple[Instance, Series, Study]] = list(
        session.execute(stmt.order_by(Instance.id).limit(q.limit).offset(q.offset)).all()
    )
    out = []
    for inst, se, st in rows:
        attrs: dict[str, Any] = inst.attributes or {}
        values: dict[str, object] = {
            "StudyInstanceUID": st.study_instance_uid,
            "SeriesInstanceUID": se.series_instance_uid,
            "SOPInstanceUID": inst.sop_instance_uid,
            "SOPClassUID": inst.sop_class_uid,
            "InstanceNumber": inst.instance_number,
            "Modality": se.modality,
            "SeriesNumber": se.series_number,
            "TransferSyntaxUID": inst.transfer_syntax_uid,
            "RetrieveURL": f"{base_url}/studies/{st.study_instance_uid}/series/"
            f"{se.series_instance_uid}/instances/{inst.sop_instance_uid}",
            **_study_values(st),
            **{k: attrs.get(k) for k in INSTANCE_EXTRA},
        }
        out.append(_pick(values, q, INSTANCE_ALWAYS))
    return out


@dataclass(frozen=True)
class StoredObject:
    """One stored instance to retrieve: where its file is, its study, its transfer syntax."""

    sop_instance_uid: str
    storage_path: str
    transfer_syntax_uid: str | None
    study_id: int
    series_instance_uid: str


def retrievable(
    session: Session,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[StoredObject]:
    """The stored instances under a WADO-RS path; NotFoundError when there are none."""
    stmt = (
        select(Instance, Series.study_id, Series.series_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Study.study_instance_uid == study_uid)
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    rows = session.execute(stmt.order_by(Series.id, Instance.id)).all()
    if not rows:
        what = (
            f"instance {sop_uid}"
            if sop_uid
            else f"series {series_uid}"
            if series_uid
            else "instance"
        )
        raise NotFoundError(f"No stored {what} in study {study_uid}.")
    return [
        StoredObject(i.sop_instance_uid, i.storage_path, i.transfer_syntax_uid, study_id, se)
        for i, study_id, se in rows
    ]
