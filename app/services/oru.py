"""HL7 v2 ORU^R01 report messages: read the header, map the report, build the acknowledgement.

Pure functions over text (no database). Parsing and escape handling are python-hl7's; this module
decides what RadCheck takes from the message:

- accession number from OBR-3 (filler order number) or OBR-18 (placer field 1), as configured;
- Study Instance UID from a ZDS segment (ZDS-1) or a study-reference OBX (OBX-3 ``113014`` or named
  "Study Instance UID"), when the RIS sends one;
- patient identifiers (PID-3 repetitions, PID-2, PID-4) for matching only: never logged;
- result status from OBR-25, else OBX-11 (P preliminary, F final, C corrected, X cancelled);
- report text from the TX/FT/ST OBX lines, HL7 escapes undone (``\\.br\\`` line break, ``\\T\\``,
  ``\\F\\``, ``\\S\\``, ``\\R\\``, ``\\E\\``, ``\\Xhh\\``), with a section heading inserted where OBX-3
  names the section (LOINC or the common vendor codes) so the report parser splits it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import hl7

from app.services.errors import InvalidInputError

__all__ = [
    "SUPPORTED_VERSIONS",
    "AckCode",
    "Hl7RejectError",
    "MessageHeader",
    "NotHl7Error",
    "OruReport",
    "build_ack",
    "decode_message",
    "parse_header",
    "parse_oru",
]

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
RESULT_STATUSES = {"P": "preliminary", "F": "final", "C": "corrected", "X": "cancelled"}
TEXT_VALUE_TYPES = {"TX", "FT", "ST"}
STUDY_UID_CODES = {"113014"}  # DCM "Study" (IHE: study reference in OBX)
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

# OBX-3 observation identifiers that name a report section (LOINC, and codes RIS vendors send).
SECTION_CODES = {
    "18782-3": "FINDINGS",  # Radiology Study observation (narrative)
    "59776-5": "FINDINGS",  # Procedure findings
    "19005-8": "IMPRESSION",  # Radiology Impression
    "18785-6": "INDICATION",  # Radiology Reason for study
    "18834-2": "COMPARISON",  # Radiology Comparison study
    "55111-9": "TECHNIQUE",  # Current imaging procedure descriptions
    "IMP": "IMPRESSION",  # GE/IDX "&IMP"; their "&GDT" is the whole report, headings in the text
    "FINDINGS": "FINDINGS",
    "IMPRESSION": "IMPRESSION",
    "INDICATION": "INDICATION",
    "HISTORY": "INDICATION",
    "COMPARISON": "COMPARISON",
    "TECHNIQUE": "TECHNIQUE",
}
# Formatting escapes rendered as plain text (python-hl7 maps these to "\r" or "_" by default).
_TEXT_ESCAPES = {".br": "\n", ".sp": "\n", ".ce": "\n", "H": "", "N": "", ".fi": "", ".nf": ""}


_KNOWN_ESCAPE = re.compile(
    r"^(?:[FSTREHN]|\.(?:br|ce|fi|nf)|\.(?:sp|sk)\d*|\.(?:in|ti)[+-]?\d*|X(?:[0-9A-Fa-f]{2})+)$"
)


class AckCode(StrEnum):
    ACCEPT = "AA"  # stored
    ERROR = "AE"  # could not be processed now (e.g. the database is down): send it again
    REJECT = "AR"  # will never be accepted as sent: the reason says what to fix


class NotHl7Error(ValueError):
    """The frame does not hold an HL7 v2 message (no MSH segment): there is nothing to answer."""


class Hl7RejectError(InvalidInputError):
    """The message cannot be accepted as sent. ``code`` is the HL7 table 0357 error code."""

    def __init__(self, message: str, code: int = 207) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MessageHeader:
    """MSH fields RadCheck needs to route the message and answer it (no PHI)."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str

    @property
    def sender(self) -> str:
        return f"{self.sending_application}|{self.sending_facility}"[:255]


@dataclass(frozen=True)
class OruReport:
    """What RadCheck takes from one ORU^R01."""

    header: MessageHeader
    accession_number: str | None
    study_instance_uid: str | None
    patient_ids: tuple[str, ...]
    result_status: str
    text: str  # may be empty for a cancellation (X)
    text_lines: int
    content_sha256: str  # of the segments after MSH (a re-send with a new MSH-7 still matches)


def _charset(data: bytes) -> str:
    """The Python codec for MSH-18 (read from an ASCII-compatible first pass)."""
    first = data.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    if len(first) < 4 or not first.startswith("MSH"):
        return "utf-8"
    fields = first.split(first[3])
    charset = fields[17].split(first[4:5] or "^")[0].strip().upper() if len(fields) > 17 else ""
    if charset in ("8859/1", "ISO-8859-1", "ISO IR100"):
        return "latin-1"
    if charset in ("ASCII", ""):
        return "utf-8"  # ASCII is a subset; many senders put UTF-8 there anyway
    return "utf-8"


def decode_message(data: bytes) -> str:
    """The message as text, with segments separated by CR (LF and CRLF are accepted too)."""
    try:
        text = data.decode(_charset(data))
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # every byte decodes; a site with latin-1 but no MSH-18
    return text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\n \t\x00")


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _field(segment: Any, index: int) -> Any:
    """Field ``index`` of a segment (1-based, HL7 numbering), or "" when absent."""
    try:
        return segment(index)
    except (IndexError, KeyError):
        return ""


def _repetitions(field: Any) -> list[Any]:
    """A field's repetitions (python-hl7 nests Field > Repetition > Component > subcomponents
    when the field holds a separator; a plain value stays a Field of one string)."""
    if isinstance(field, hl7.Field) and any(isinstance(c, hl7.Repetition) for c in field):
        return list(field)
    return [field]


def _component(value: Any, index: int) -> str:
    """Component ``index`` (1-based) of a field (its first repetition) or of a repetition."""
    rep = _repetitions(value)[0]
    if isinstance(rep, hl7.Repetition):
        return _str(rep[index - 1]) if index <= len(rep) else ""
    return _str(rep) if index == 1 else ""


def _parse(text: str) -> Any:
    if not text.startswith("MSH") or len(text) < 9:
        raise NotHl7Error("the frame does not start with an MSH segment")
    try:
        return hl7.parse(text)
    except Exception as exc:  # python-hl7 raises several types on bad input
        raise NotHl7Error(f"the message could not be parsed ({type(exc).__name__})") from exc


def _header(message: Any) -> MessageHeader:
    msh = message.segment("MSH")
    message_type = _field(msh, 9)
    return MessageHeader(
        field_separator=_str(_field(msh, 1)) or "|",
        encoding_characters=_str(_field(msh, 2)) or "^~\\&",
        sending_application=_component(_field(msh, 3), 1),
        sending_facility=_component(_field(msh, 4), 1),
        receiving_application=_component(_field(msh, 5), 1),
        receiving_facility=_component(_field(msh, 6), 1),
        message_type=_component(message_type, 1).upper(),
        trigger_event=_component(message_type, 2).upper(),
        control_id=_str(_field(msh, 10)).strip(),
        processing_id=_component(_field(msh, 11), 1),
        version=_component(_field(msh, 12), 1).strip(),
    )


def parse_header(text: str) -> MessageHeader:
    """The MSH of ``text``; ``NotHl7Error`` when there is none."""
    return _header(_parse(text))


def _unescape(message: Any, raw: str) -> str:
    """HL7 escapes undone. Sequences python-hl7 cannot map (unknown, empty, or character-set
    switches) are dropped first: the library would log the whole field, i.e. the report text."""
    esc = re.escape(message.esc)
    raw = re.sub(
        rf"{esc}([^{esc}\r]*){esc}",
        lambda m: m.group(0) if _KNOWN_ESCAPE.match(m.group(1)) else "",
        raw,
    )
    return str(message.unescape(raw, app_map=_TEXT_ESCAPES))


def _observation_lines(message: Any, obx: Any) -> list[str]:
    """OBX-5 as text lines: each repetition is a line; stray component separators are kept."""
    lines: list[str] = []
    for rep in _repetitions(_field(obx, 5)):
        lines.extend(_unescape(message, _str(rep)).split("\n"))
    return [line.rstrip() for line in lines]


def _section_of(obx: Any) -> str | None:
    ident = _field(obx, 3)
    for candidate in (_component(ident, 1), _component(ident, 2)):
        name = SECTION_CODES.get(candidate.strip().lstrip("&").upper())
        if name is not None:
            return name
    return None


def _is_study_reference(obx: Any) -> bool:
    ident = _field(obx, 3)
    code, name = _component(ident, 1).strip(), _component(ident, 2).strip().lower()
    return code in STUDY_UID_CODES or "study instance uid" in name


def _study_uid(message: Any) -> str | None:
    found: list[str] = []
    for seg in message:
        seg_id = _str(seg[0])
        if seg_id == "ZDS":
            found.append(_component(_field(seg, 1), 1).strip())
        elif seg_id == "OBX" and _is_study_reference(seg):
            found.append(_component(_field(seg, 5), 1).strip())
    found = [uid for uid in found if uid]
    if not found:
        return None
    uid = found[0]
    if len(uid) > 64 or not UID_RE.match(uid):
        raise Hl7RejectError(
            "The Study Instance UID in ZDS-1 (or the study-reference OBX) is not a DICOM UID "
            "(digits and dots, at most 64 characters): send the study's UID or leave it out.",
            code=102,
        )
    if any(other != uid for other in found[1:]):
        raise Hl7RejectError(
            "The message names more than one Study Instance UID (ZDS / OBX): send one report "
            "per study.",
            code=102,
        )
    return uid


def _segments(message: Any, segment_id: str) -> list[Any]:
    return [seg for seg in message if _str(seg[0]) == segment_id]


def _patient_ids(message: Any) -> tuple[str, ...]:
    ids: list[str] = []
    for pid in _segments(message, "PID"):
        for index in (3, 2, 4):
            for rep in _repetitions(_field(pid, index)):
                value = _component(rep, 1).strip()
                if value and value not in ids:
                    ids.append(value)
    return tuple(ids)


def _result_status(obrs: list[Any], obxs: list[Any]) -> str:
    statuses = [_str(_field(obr, 25)).strip().upper() for obr in obrs]
    statuses = [s for s in statuses if s]
    if not statuses:
        statuses = [_str(_field(obx, 11)).strip().upper() for obx in obxs]
        statuses = [s for s in statuses if s]
    if not statuses:
        raise Hl7RejectError(
            "No result status: set OBR-25 (or OBX-11) to P (preliminary), F (final), "
            "C (corrected) or X (cancelled).",
            code=101,
        )
    # A message mixing statuses is as final as its most final line (corrected > final > prelim).
    for status in ("X", "C", "F", "P"):
        if status in statuses:
            return status
    raise Hl7RejectError(
        f"Result status {statuses[0][:3]!r} (OBR-25 / OBX-11) is not supported: RadCheck takes "
        "P (preliminary), F (final), C (corrected) and X (cancelled).",
        code=103,
    )


def parse_oru(text: str, *, accession_field: str = "OBR-3") -> OruReport:
    """Map an ORU^R01 to the report RadCheck stores; ``Hl7RejectError`` says why it cannot be."""
    message = _parse(text)
    header = _header(message)
    if not header.control_id:
        raise Hl7RejectError(
            "MSH-10 (message control ID) is empty: every message needs its own ID.", code=101
        )
    if (header.message_type, header.trigger_event) != ("ORU", "R01"):
        kind = f"{header.message_type}^{header.trigger_event}".strip("^") or "(empty)"
        raise Hl7RejectError(
            f"Message type {kind} (MSH-9) is not supported: RadCheck receives reports as ORU^R01.",
            code=200 if header.message_type != "ORU" else 201,
        )
    if header.version not in SUPPORTED_VERSIONS:
        raise Hl7RejectError(
            f"HL7 version {header.version or '(empty)'!r} (MSH-12) is not supported: send "
            f"{', '.join(SUPPORTED_VERSIONS)}.",
            code=203,
        )
    obrs = _segments(message, "OBR")
    if not obrs:
        raise Hl7RejectError(
            "No OBR segment: an ORU^R01 report needs OBR (order, accession number, status).",
            code=100,
        )
    field_no = int(accession_field.split("-")[1])
    accessions = {_component(_field(obr, field_no), 1).strip() for obr in obrs} - {""}
    if len(accessions) > 1:
        raise Hl7RejectError(
            f"The OBR segments carry {len(accessions)} different accession numbers "
            f"({accession_field}): send one report per message.",
            code=102,
        )
    accession = next(iter(accessions), None)
    if accession is not None and len(accession) > 64:
        raise Hl7RejectError(
            f"The accession number in {accession_field} is longer than 64 characters.", code=102
        )
    study_uid = _study_uid(message)
    if accession is None and study_uid is None:
        raise Hl7RejectError(
            f"No accession number in {accession_field} and no Study Instance UID (ZDS-1): "
            "RadCheck cannot tell which study the report belongs to. Set "
            f"{accession_field} (or RADCHECK_HL7__ACCESSION_FIELD to where the RIS puts it).",
            code=101,
        )
    obxs = _segments(message, "OBX")
    status = _result_status(obrs, obxs)
    parts: list[str] = []
    current: str | None = None
    lines = 0
    for obx in obxs:
        if _str(_field(obx, 2)).strip().upper() not in TEXT_VALUE_TYPES or _is_study_reference(obx):
            continue
        section = _section_of(obx)
        obx_lines = _observation_lines(message, obx)
        body = "\n".join(obx_lines).strip("\n")
        if section is not None and section != current:
            labelled = body.lstrip().upper().startswith(section)
            parts.append(body if labelled else f"{section}:\n{body}")
            current = section
        else:
            parts.append(body)
        lines += len(obx_lines)
    text_out = "\n".join(parts).strip()
    if status != "X" and not text_out:
        raise Hl7RejectError(
            "The message has no report text: send it in OBX segments of type TX, FT or ST.",
            code=101,
        )
    return OruReport(
        header=header,
        accession_number=accession,
        study_instance_uid=study_uid,
        patient_ids=_patient_ids(message),
        result_status=status,
        text=text_out,
        text_lines=lines,
        content_sha256=hashlib.sha256(text.partition("\r")[2].encode()).hexdigest(),
    )


def _escape(value: str, header: MessageHeader | None) -> str:
    fs = header.field_separator if header else "|"
    enc = header.encoding_characters if header else "^~\\&"
    container = hl7.Message(separators="\r" + fs + enc[1:2] + enc[0:1] + enc[3:4], esc=enc[2:3])
    flat = " ".join(value.split())  # no CR/LF in a field
    return str(hl7.util.escape(container, flat))


def build_ack(
    header: MessageHeader | None,
    code: AckCode,
    text: str,
    *,
    error_code: int | None = None,
    application: str = "RADCHECK",
    control_id: str | None = None,
) -> str:
    """An original-mode ACK: MSA-1 the code, MSA-2 the message's MSH-10, MSA-3 the reason, and an
    ERR segment (HL7 table 0357 code) for AE/AR."""
    fs = header.field_separator if header else "|"
    enc = header.encoding_characters if header else "^~\\&"
    comp, sub = enc[0:1] or "^", enc[3:4] or "&"
    version = header.version if header and header.version in SUPPORTED_VERSIONS else "2.5.1"
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    ack_id = control_id or f"RC{uuid.uuid4().hex[:18]}"
    trigger = header.trigger_event if header and header.trigger_event else "R01"
    msh = fs.join(
        [
            "MSH",
            enc,
            _escape(application, header),
            _escape(header.receiving_facility, header) if header else "",
            _escape(header.sending_application, header) if header else "",
            _escape(header.sending_facility, header) if header else "",
            now,
            "",
            f"ACK{comp}{trigger}{comp}ACK",
            ack_id,
            (header.processing_id if header else "") or "P",
            version,
        ]
    )
    reason = _escape(text[:200], header)
    msa = fs.join(["MSA", code.value, _escape(header.control_id, header) if header else "", reason])
    segments = [msh, msa]
    if code != AckCode.ACCEPT:
        err_code = str(error_code or 207)
        err_text = {
            100: "Segment sequence error",
            101: "Required field missing",
            102: "Data type error",
            103: "Table value not found",
            200: "Unsupported message type",
            201: "Unsupported event code",
            203: "Unsupported version id",
            205: "Duplicate key identifier",
            206: "Application record locked",
            207: "Application internal error",
        }.get(int(err_code), "Application internal error")
        if version.startswith(("2.3", "2.4")):
            # ERR-1 (CM: segment^sequence^field^code&text&table), v2.3 and v2.4.
            err = fs.join(["ERR", f"{comp}{comp}{comp}{err_code}{sub}{err_text}{sub}HL70357"])
        else:
            # ERR-3 code (CWE), ERR-4 severity, ERR-8 user message (v2.5+).
            err = fs.join(
                ["ERR", "", "", f"{err_code}{comp}{err_text}{comp}HL70357", "E", "", "", "", reason]
            )
        segments.append(err)
    return "\r".join(segments) + "\r"
