"""Corpus loaders: IU X-ray XML archive, CSV, JSONL and a folder of raw text reports.

Every loader yields `ReportRecord`s lazily and raises `CorpusError` with the file and the fix.
"""

from __future__ import annotations

import csv
import json
import tarfile
import zipfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree

from eval.errors import CorpusError
from eval.records import ReportRecord
from medvlm.report_input import REPORT_FIELDS

IU_WHEEL_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
IU_HOW_TO_GET = (
    "the IU X-ray reports archive NLMCXR_reports.tgz ships inside the PyPI wheel "
    "torchxrayvision==1.5.7: run `pip download --no-deps torchxrayvision==1.5.7` and pass the "
    ".whl file (or the extracted torchxrayvision/data/NLMCXR_reports.tgz) with --corpus-path"
)
_IU_FIELDS = {
    "FINDINGS": "findings",
    "IMPRESSION": "impression",
    "INDICATION": "indication",
    "COMPARISON": "comparison",
}


class CorpusKind(StrEnum):
    """The corpus formats `load_corpus` understands."""

    IU = "iu"
    CSV = "csv"
    JSONL = "jsonl"
    TEXT = "text"


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    stripped = " ".join(text.split())
    return stripped or None


def parse_iu_xml(data: bytes, name: str) -> ReportRecord:
    """Read one IU X-ray report XML document (the ``uId`` is the report id)."""
    try:
        # The IU archive is a fixed public file; expat in Python >= 3.11 refuses entity expansion
        # attacks, and the documents carry no DTD.
        root = ElementTree.fromstring(data)  # noqa: S314
    except ElementTree.ParseError as exc:
        raise CorpusError(
            f"{name}: not a well-formed IU report XML ({exc}); is the archive intact?"
        ) from exc
    uid = root.find("uId")
    rid = uid.get("id") if uid is not None else None
    if not rid:
        raise CorpusError(f"{name}: IU report XML has no <uId id=...>; is this the NLMCXR archive?")
    fields: dict[str, str | None] = dict.fromkeys(_IU_FIELDS.values())
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").upper()
        if label in _IU_FIELDS:
            fields[_IU_FIELDS[label]] = _clean("".join(node.itertext()))
    tags = tuple(
        t for node in root.iter("major") if (t := " ".join("".join(node.itertext()).split()))
    )
    return ReportRecord(
        id=rid,
        tags=tags,
        findings=fields["findings"],
        impression=fields["impression"],
        indication=fields["indication"],
        comparison=fields["comparison"],
    )


def _open_iu_archive(path: Path) -> tuple[IO[bytes], zipfile.ZipFile | None]:
    if path.suffix == ".whl":
        wheel = zipfile.ZipFile(path)
        try:
            return wheel.open(IU_WHEEL_MEMBER), wheel
        except KeyError:
            wheel.close()
            raise CorpusError(
                f"{path}: wheel has no member {IU_WHEEL_MEMBER}; use torchxrayvision==1.5.7"
            ) from None
    return path.open("rb"), None


def load_iu(path: Path) -> Iterator[ReportRecord]:
    """Stream the IU X-ray reports from ``NLMCXR_reports.tgz`` (or the torchxrayvision wheel)."""
    if not path.is_file():
        raise CorpusError(f"IU corpus not found at {path}; {IU_HOW_TO_GET}")
    raw, wheel = _open_iu_archive(path)
    try:
        with tarfile.open(fileobj=raw, mode="r:gz") as archive:
            for member in archive:
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                yield parse_iu_xml(handle.read(), f"{path}:{member.name}")
    except tarfile.TarError as exc:
        raise CorpusError(f"{path}: not a gzip tar archive ({exc}); {IU_HOW_TO_GET}") from exc
    finally:
        raw.close()
        if wheel is not None:
            wheel.close()


def load_csv(path: Path, *, id_column: str = "id") -> Iterator[ReportRecord]:
    """Read a CSV with ``findings`` and/or ``impression`` columns (``text`` for raw reports).

    Optional columns: ``indication``, ``comparison``, ``technique``. Without an id column the 1-based row number
    is the id.
    """
    if not path.is_file():
        raise CorpusError(f"CSV corpus not found at {path}; pass an existing file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not columns & {"findings", "impression", "text"}:
            raise CorpusError(
                f"{path}: CSV needs a 'findings', 'impression' or 'text' column; "
                f"found {sorted(columns)}"
            )
        for number, row in enumerate(reader, start=1):
            rid = row.get(id_column) or str(number)
            yield ReportRecord(
                id=rid,
                findings=_clean(row.get("findings")),
                impression=_clean(row.get("impression")),
                indication=_clean(row.get("indication")),
                comparison=_clean(row.get("comparison")),
                technique=_clean(row.get("technique")),
                text=row.get("text") or None,
            )


def _record_from_json(obj: Any, where: str) -> ReportRecord:
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: each JSONL line must be an object")
    rid = obj.get("id")
    if rid is None or str(rid) == "":
        raise CorpusError(f"{where}: missing 'id'; every report needs a unique id")
    values: dict[str, str | None] = {}
    for key in REPORT_FIELDS:
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise CorpusError(f"{where}: field {key!r} must be a string or null")
        values[key] = value if key == "text" else _clean(value)
    header = obj.get("header")
    if header is not None and not isinstance(header, dict):
        raise CorpusError(f"{where}: 'header' must be an object or null")
    return ReportRecord(
        id=str(rid),
        findings=values["findings"],
        impression=values["impression"],
        indication=values["indication"],
        comparison=values["comparison"],
        technique=values["technique"],
        text=values["text"],
        header=header,
    )


def iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, object)`` for each non-blank line of a JSONL file."""
    if not path.is_file():
        raise CorpusError(f"JSONL file not found at {path}; pass an existing file")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: invalid JSON ({exc.msg})") from None


def load_jsonl(path: Path) -> Iterator[ReportRecord]:
    """Read JSONL reports: ``id``, ``findings``/``impression`` or ``text``, optional ``header``."""
    for where, obj in iter_jsonl(path):
        yield _record_from_json(obj, where)


def load_text_dir(path: Path) -> Iterator[ReportRecord]:
    """Read a folder of raw (MIMIC-style) ``.txt`` reports; the file stem is the id."""
    if not path.is_dir():
        raise CorpusError(f"text corpus folder not found at {path}; pass a folder of .txt reports")
    files = sorted(path.rglob("*.txt"))
    if not files:
        raise CorpusError(f"{path}: no .txt files found; raw reports must end in .txt")
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        rid = file.relative_to(path).with_suffix("").as_posix()
        yield ReportRecord(id=rid, text=text)


def load_corpus(kind: CorpusKind | str, path: Path) -> Iterator[ReportRecord]:
    """Dispatch to the loader for ``kind``."""
    try:
        kind = CorpusKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in CorpusKind)
        raise CorpusError(f"unknown corpus kind {kind!r}; use one of {allowed}") from None
    loaders = {
        CorpusKind.IU: load_iu,
        CorpusKind.CSV: load_csv,
        CorpusKind.JSONL: load_jsonl,
        CorpusKind.TEXT: load_text_dir,
    }
    return loaders[kind](path)
