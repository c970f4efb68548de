"""Check results as DICOM objects for the PACS (IHE AI Results): TID 1500 SR, text SR and GSPS.

Pure functions over pydicom datasets (highdicom builds and validates the objects); nothing here knows
the database or HTTP. One export is three objects in the source image's study:

* a **Comprehensive 3D SR** with the TID 1500 measurement report: one measurement group per flag, with
  the finding's code (``data/result_codes.yaml``: SNOMED CT where the DICOM code tables have the
  concept, else RadCheck's private scheme ``99RADCHECK``), the region as a closed 5-point POLYLINE
  SCOORD when the flag has a box (SR has no rectangle), the error kind, its severity and
  "Unverified AI output" as coded qualitative evaluations, the confidence as a probability, the
  algorithm name, version and model/prompt provenance (TID 4019), and a device observer;
* a **text SR** (Enhanced SR) with the human-readable messages and the flagged sentences;
* a **GSPS** drawing each box with a short label, when at least one flag has a box.

All are marked preliminary and unverified: PreliminaryFlag PRELIMINARY, CompletionFlag PARTIAL,
VerificationFlag UNVERIFIED, and their text says "Unverified AI output".

Re-checks: each export is a **new series** (new Series Instance UIDs for the SRs and the GSPS); the
SRs of a re-check list the earlier export's SRs in the Predecessor Documents Sequence (0040,A360), so
a PACS or viewer can tell which result supersedes which. GSPS has no predecessor attribute: the newest
GSPS series (later Presentation Creation Date/Time, same Content Label) supersedes the older ones.
Nothing is deleted from the PACS.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import yaml
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_io.errors import DicomIOError

__all__ = [
    "UNVERIFIED",
    "CodeEntry",
    "ObjectRef",
    "ReadFlag",
    "ResultCodes",
    "ResultFlag",
    "ResultObjects",
    "ResultProvenance",
    "ResultUids",
    "ResultsError",
    "build_result_objects",
    "load_result_codes",
    "read_flags",
]

UNVERIFIED = "Unverified AI output"
PRIVATE_SCHEME = "99RADCHECK"
DEFAULT_CODES_FILE = "result_codes.yaml"
SR_SERIES_NUMBER = 9801
PR_SERIES_NUMBER = 9802
_MAX_LABEL = 64


class ResultsError(DicomIOError):
    """The result objects cannot be built (bad source image, flag or code table)."""


@dataclass(frozen=True)
class CodeEntry:
    """One code: scheme designator, value and meaning."""

    scheme: str
    value: str
    meaning: str

    @property
    def concept(self) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(
            value=self.value, scheme_designator=self.scheme, meaning=self.meaning
        )


@dataclass(frozen=True)
class ResultCodes:
    """The code tables of ``data/result_codes.yaml``."""

    version: str
    private_scheme: Mapping[str, str]
    findings: Mapping[str, CodeEntry]
    error_kinds: Mapping[str, CodeEntry]
    severities: Mapping[str, CodeEntry]
    concept_names: Mapping[str, CodeEntry]

    def finding(self, concept: str | None) -> CodeEntry:
        """The code of a flag's concept (``interval:<wording>`` -> interval; None -> unspecified)."""
        if concept is None:
            return self.findings["unspecified"]
        if concept.startswith("interval:"):
            return self.findings["interval"]
        entry = self.findings.get(concept)
        if entry is None:
            raise ResultsError(
                f"finding concept {concept!r} has no code in {DEFAULT_CODES_FILE}; add an entry "
                "under 'findings' (SNOMED CT from pydicom.sr.codedict, or a new 99RADCHECK code)"
            )
        return entry

    def error_kind(self, kind: str) -> CodeEntry:
        return self._lookup(self.error_kinds, kind, "error_kinds")

    def severity(self, severity: str) -> CodeEntry:
        return self._lookup(self.severities, severity, "severities")

    @staticmethod
    def _lookup(table: Mapping[str, CodeEntry], key: str, name: str) -> CodeEntry:
        entry = table.get(key)
        if entry is None:
            raise ResultsError(
                f"{name[:-1].replace('_', ' ')} {key!r} has no code in {DEFAULT_CODES_FILE}; "
                f"known: {', '.join(sorted(table))}"
            )
        return entry

    def coding_scheme_item(self) -> Dataset:
        """The Coding Scheme Identification Sequence item describing the private scheme."""
        item = Dataset()
        item.CodingSchemeDesignator = self.private_scheme["designator"]
        item.CodingSchemeName = self.private_scheme["name"]
        item.CodingSchemeVersion = self.private_scheme["version"]
        item.CodingSchemeResponsibleOrganization = self.private_scheme["responsible_organization"]
        return item


def _table(data: Any, name: str, source: str) -> dict[str, CodeEntry]:
    if not isinstance(data, dict):
        raise ResultsError(f"{source}: '{name}' must be a mapping of id -> code")
    table: dict[str, CodeEntry] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != {"scheme", "value", "meaning"}:
            raise ResultsError(f"{source}: {name}.{key} needs exactly scheme, value and meaning")
        code = CodeEntry(str(entry["scheme"]), str(entry["value"]), str(entry["meaning"]))
        if len(code.value) > 16 or len(code.meaning) > 64:
            raise ResultsError(
                f"{source}: {name}.{key}: value is at most 16 and meaning 64 characters (DICOM SH/LO)"
            )
        table[str(key)] = code
    return table


def load_result_codes(path: Path | None = None) -> ResultCodes:
    """Load and validate the code tables (the packaged file unless ``path`` is given)."""
    return _load_codes(None if path is None else str(path))


@lru_cache(maxsize=4)
def _load_codes(path: str | None) -> ResultCodes:
    if path is None:
        text = resources.files("dicom_io").joinpath("data", DEFAULT_CODES_FILE).read_text()
        source = DEFAULT_CODES_FILE
    else:
        text = Path(path).read_text()
        source = path
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ResultsError(f"{source}: not a YAML mapping")
    tables = {
        name: _table(data.get(name), name, source)
        for name in ("findings", "error_kinds", "severities", "concept_names")
    }
    for required in ("unspecified", "interval"):
        if required not in tables["findings"]:
            raise ResultsError(f"{source}: findings.{required} is required")
    scheme = data.get("private_scheme")
    if not isinstance(scheme, dict) or scheme.get("designator") != PRIVATE_SCHEME:
        raise ResultsError(f"{source}: private_scheme.designator must be {PRIVATE_SCHEME}")
    return ResultCodes(
        version=str(data.get("version")),
        private_scheme={k: str(v) for k, v in scheme.items()},
        **tables,
    )


@dataclass(frozen=True)
class ResultFlag:
    """One flag as it goes into the objects (unverified AI output).

    ``box`` is ``(x0, y0, x1, y1)`` in the source image's pixel columns/rows; ``finding`` is the
    checker's concept id (``None``: unspecified); ``uid`` keeps a flag's tracking UID stable across
    exports of the same check (a new one is made if absent).
    """

    kind: str
    severity: str
    message: str
    confidence: float
    sentence: str | None = None
    finding: str | None = None
    box: tuple[float, float, float, float] | None = None
    identifier: str | None = None
    uid: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ResultsError(f"flag confidence {self.confidence} outside 0..1")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not all(np.isfinite(v) for v in self.box) or x1 <= x0 or y1 <= y0:
                raise ResultsError(
                    f"flag box {self.box!r} is not (x0, y0, x1, y1) with x0<x1, y0<y1"
                )


@dataclass(frozen=True)
class ResultProvenance:
    """Who made the results: the algorithm (TID 4019) and the device observer (TID 1004)."""

    algorithm_version: str
    parameters: tuple[str, ...] = ()
    """Model and prompt provenance, e.g. ``("model=llava-rad sha256:...", "prompt=complex v3")``."""
    algorithm_name: str = "RadCheck report checker"
    device_uid: str = field(default_factory=generate_uid)
    device_name: str = "RadCheck"
    manufacturer: str = "RadCheck"
    model_name: str = "RadCheck"


@dataclass(frozen=True)
class ObjectRef:
    """A stored DICOM object, by its UIDs (an earlier export's SR, for the predecessor reference)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str

    @classmethod
    def of(cls, ds: Dataset) -> ObjectRef:
        return cls(
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID),
        )

    def dataset(self) -> Dataset:
        ds = Dataset()
        ds.StudyInstanceUID = self.study_instance_uid
        ds.SeriesInstanceUID = self.series_instance_uid
        ds.SOPClassUID = self.sop_class_uid
        ds.SOPInstanceUID = self.sop_instance_uid
        return ds


@dataclass(frozen=True)
class ResultUids:
    """The UIDs of one export: fixed when the export is created, so a retry re-sends the same objects."""

    sr_series: str
    measurement_report: str
    text_report: str
    pr_series: str
    presentation_state: str

    @classmethod
    def new(cls) -> ResultUids:
        return cls(*(generate_uid() for _ in range(5)))


@dataclass(frozen=True)
class ResultObjects:
    """The objects of one export: the TID 1500 SR only when there are flags (the template needs at
    least one measurement group), the GSPS only when a flag has a box; the text SR always."""

    measurement_report: Dataset | None
    text_report: Dataset
    presentation_state: Dataset | None

    def datasets(self) -> list[Dataset]:
        out = [self.measurement_report, self.text_report, self.presentation_state]
        return [ds for ds in out if ds is not None]


def _mark_unverified(ds: Dataset, result_codes: ResultCodes, *, description: str) -> None:
    ds.PreliminaryFlag = "PRELIMINARY"
    ds.SeriesDescription = f"RadCheck {description} ({UNVERIFIED})"[:64]
    ds.CodingSchemeIdentificationSequence = [result_codes.coding_scheme_item()]


def _clamped_box(
    box: tuple[float, float, float, float], columns: int, rows: int
) -> tuple[float, float, float, float] | None:
    """The box inside the image (GSPS and SCOORD need coordinates within it), or None if outside."""
    x0, y0, x1, y1 = box
    x0, x1 = (min(max(v, 0.0), float(columns - 1)) for v in (x0, x1))
    y0, y1 = (min(max(v, 0.0), float(rows - 1)) for v in (y0, y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _polyline(box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def _short_label(flag: ResultFlag, result_codes: ResultCodes) -> str:
    finding = result_codes.finding(flag.finding).meaning
    return f"{flag.kind}: {finding} (AI, unverified)"[:_MAX_LABEL]


def _check_source(source: Dataset) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(getattr(source, keyword, "") or ""):
            raise ResultsError(
                f"the source image has no {keyword}: results must reference a stored image"
            )
    if not getattr(source, "Rows", None) or not getattr(source, "Columns", None):
        raise ResultsError("the source image has no (0028,0010) Rows / (0028,0011) Columns")


def build_result_objects(
    source: Dataset,
    flags: Sequence[ResultFlag],
    provenance: ResultProvenance,
    *,
    uids: ResultUids | None = None,
    predecessors: Sequence[ObjectRef] = (),
    result_codes: ResultCodes | None = None,
    sr_series_number: int = SR_SERIES_NUMBER,
    pr_series_number: int = PR_SERIES_NUMBER,
) -> ResultObjects:
    """Build the TID 1500 SR (when there are flags), the text SR and (when a flag has a box) the
    GSPS for ``source``.

    ``source`` is the checked image (pixel data not needed). ``predecessors`` are the SR objects of
    the export this one replaces (listed in each new SR's Predecessor Documents Sequence).
    """
    _check_source(source)
    table = result_codes or load_result_codes()
    ids = uids or ResultUids.new()
    columns, rows = int(source.Columns), int(source.Rows)
    boxes = {
        i: clamped
        for i, flag in enumerate(flags)
        if flag.box is not None and (clamped := _clamped_box(flag.box, columns, rows)) is not None
    }
    previous = [
        p.dataset() for p in predecessors if p.study_instance_uid == source.StudyInstanceUID
    ]
    sr = None
    if flags:
        sr = _measurement_report(source, flags, boxes, provenance, ids, previous, table)
        sr.SeriesNumber = sr_series_number
    text = _text_report(source, flags, provenance, ids, previous, table)
    text.SeriesNumber = sr_series_number
    gsps = (
        _presentation_state(source, flags, boxes, provenance, ids, table, pr_series_number)
        if boxes
        else None
    )
    return ResultObjects(measurement_report=sr, text_report=text, presentation_state=gsps)


def _observation_context(provenance: ResultProvenance) -> hd.sr.ObservationContext:
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=provenance.device_uid,
                name=provenance.device_name,
                manufacturer_name=provenance.manufacturer,
                model_name=provenance.model_name,
            ),
        )
    )


def _evaluation(table: ResultCodes, name: str, value: CodeEntry) -> hd.sr.QualitativeEvaluation:
    """A coded qualitative evaluation: ``concept_names[name]`` is ``value``."""
    return hd.sr.QualitativeEvaluation(name=table.concept_names[name].concept, value=value.concept)


def _text_item(name: hd.sr.CodedConcept, value: str) -> hd.sr.TextContentItem:
    """A TEXT content item the text SR's container CONTAINS."""
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _unverified_sr(
    document: type[hd.sr.Comprehensive3DSR] | type[hd.sr.EnhancedSR],
    source: Dataset,
    content: Any,
    *,
    sop_instance_uid: str,
    instance_number: int,
    provenance: ResultProvenance,
    ids: ResultUids,
    previous: list[Dataset],
    table: ResultCodes,
    description: str,
) -> Dataset:
    """One SR of the export's SR series: partial, preliminary, unverified, after its predecessors."""
    sr = document(
        evidence=[source],
        content=content,
        series_instance_uid=ids.sr_series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=provenance.manufacturer,
        is_complete=False,
        is_final=False,
        is_verified=False,
        previous_versions=previous or None,
    )
    _mark_unverified(sr, table, description=description)
    return sr


def _measurement_report(
    source: Dataset,
    flags: Sequence[ResultFlag],
    boxes: Mapping[int, tuple[float, float, float, float]],
    provenance: ResultProvenance,
    ids: ResultUids,
    previous: list[Dataset],
    table: ResultCodes,
) -> Dataset:
    algorithm = hd.sr.AlgorithmIdentification(
        name=provenance.algorithm_name,
        version=provenance.algorithm_version,
        parameters=list(provenance.parameters) or None,
        manufacturer=provenance.manufacturer,
    )
    unverified = _evaluation(table, "verification", table.concept_names["unverified"])
    source_uids = {
        "referenced_sop_class_uid": source.SOPClassUID,
        "referenced_sop_instance_uid": source.SOPInstanceUID,
    }
    groups: list[Any] = []
    for i, flag in enumerate(flags):
        tracking = hd.sr.TrackingIdentifier(
            uid=flag.uid or generate_uid(), identifier=(flag.identifier or f"flag {i + 1}")[:64]
        )
        evaluations = [
            _evaluation(table, "error_kind", table.error_kind(flag.kind)),
            _evaluation(table, "severity", table.severity(flag.severity)),
            unverified,
        ]
        confidence = hd.sr.Measurement(
            name=codes.DCM.Probability,
            value=float(flag.confidence),
            unit=codes.UCUM.NoUnits,
        )
        common: dict[str, Any] = {
            "tracking_identifier": tracking,
            "finding_type": table.finding(flag.finding).concept,
            "algorithm_id": algorithm,
            "measurements": [confidence],
            "qualitative_evaluations": evaluations,
        }
        box = boxes.get(i)
        if box is not None:
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=_polyline(box),
                source_image=hd.sr.SourceImageForRegion(**source_uids),
            )
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    referenced_region=region, **common
                )
            )
        else:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    source_images=[hd.sr.SourceImageForMeasurementGroup(**source_uids)],
                    **common,
                )
            )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(provenance),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    return _unverified_sr(
        hd.sr.Comprehensive3DSR,
        source,
        report[0],
        sop_instance_uid=ids.measurement_report,
        instance_number=1,
        provenance=provenance,
        ids=ids,
        previous=previous,
        table=table,
        description="flags, TID 1500",
    )


def _text_report(
    source: Dataset,
    flags: Sequence[ResultFlag],
    provenance: ResultProvenance,
    ids: ResultUids,
    previous: list[Dataset],
    table: ResultCodes,
) -> Dataset:
    items: list[Any] = list(_observation_context(provenance))
    summary = (
        f"{UNVERIFIED}: {len(flags)} possible report error(s) flagged by "
        f"{provenance.algorithm_name} {provenance.algorithm_version}. A radiologist must review "
        "every flag; none has been verified."
        if flags
        else f"{UNVERIFIED}: {provenance.algorithm_name} {provenance.algorithm_version} flagged no "
        "possible report error. This is not a verification of the report."
    )
    items.append(_text_item(codes.DCM.Summary, summary))
    for i, flag in enumerate(flags):
        finding = table.finding(flag.finding).meaning
        lines = [
            f"Flag {i + 1} ({UNVERIFIED}): {table.error_kind(flag.kind).meaning}, "
            f"{flag.severity}, confidence {flag.confidence:.2f}, finding: {finding}.",
            flag.message,
        ]
        if flag.sentence:
            lines.append(f'Flagged sentence: "{flag.sentence}"')
        items.append(_text_item(codes.DCM.Finding, "\n".join(lines)))
    if provenance.parameters:
        items.append(_text_item(codes.DCM.AlgorithmParameters, "; ".join(provenance.parameters)))
    container = hd.sr.ContainerContentItem(
        name=table.concept_names["unverified"].concept,
        template_id=None,
    )
    container.ContentSequence = items  # type: ignore[assignment]  # pydicom accepts a list
    return _unverified_sr(
        hd.sr.EnhancedSR,
        source,
        container,
        sop_instance_uid=ids.text_report,
        instance_number=2,
        provenance=provenance,
        ids=ids,
        previous=previous,
        table=table,
        description="flags, text",
    )


def _presentation_state(
    source: Dataset,
    flags: Sequence[ResultFlag],
    boxes: Mapping[int, tuple[float, float, float, float]],
    provenance: ResultProvenance,
    ids: ResultUids,
    table: ResultCodes,
    series_number: int,
) -> Dataset:
    layer = hd.pr.GraphicLayer(layer_name="RADCHECK", order=1, description=UNVERIFIED)
    columns, rows = int(source.Columns), int(source.Rows)
    graphics: list[hd.pr.GraphicObject] = []
    texts: list[hd.pr.TextObject] = []
    for i, box in sorted(boxes.items()):
        graphics.append(
            hd.pr.GraphicObject(
                graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                graphic_data=_polyline(box),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
            )
        )
        x0, y0, x1, _ = box
        height = max(min(rows / 40.0, 48.0), 8.0)
        top = y0 - height if y0 - height >= 0 else y0
        bottom = min(top + height, float(rows - 1))
        right = min(max(x1, x0 + columns / 4.0), float(columns - 1))
        texts.append(
            hd.pr.TextObject(
                text_value=_short_label(flags[i], table),
                units=hd.pr.AnnotationUnitsValues.PIXEL,
                bounding_box=(x0, top, right, bottom),
            )
        )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[source],
        graphic_layer=layer,
        graphic_objects=graphics,
        text_objects=texts,
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=ids.pr_series,
        series_number=series_number,
        sop_instance_uid=ids.presentation_state,
        instance_number=1,
        manufacturer=provenance.manufacturer,
        manufacturer_model_name=provenance.model_name,
        software_versions=provenance.algorithm_version,
        device_serial_number=provenance.device_uid[-16:],
        content_label="RADCHECK_FLAGS",
        content_description=f"RadCheck flag boxes ({UNVERIFIED})"[:64],
        graphic_annotations=[annotation],
        graphic_layers=[layer],
    )
    _mark_unverified(gsps, table, description="flag boxes")
    return gsps


@dataclass(frozen=True)
class ReadFlag:
    """A flag read back from a TID 1500 SR (for tests and for checking what a PACS holds)."""

    kind: str
    severity: str
    finding_code: str
    confidence: float
    box: tuple[float, float, float, float] | None
    unverified: bool


def read_flags(ds: Dataset, result_codes: ResultCodes | None = None) -> list[ReadFlag]:
    """The flags of a RadCheck TID 1500 SR, parsed by highdicom (kind and severity by code)."""
    table = result_codes or load_result_codes()
    kinds = {e.value: k for k, e in table.error_kinds.items()}
    severities = {e.value: k for k, e in table.severities.items()}
    try:
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    except (AttributeError, ValueError, TypeError) as exc:
        raise ResultsError(f"not a Comprehensive 3D SR with a measurement report: {exc}") from exc
    content: Any = sr.content  # highdicom types it as the base ContentSequence
    groups = list(content.get_planar_roi_measurement_groups()) + list(
        content.get_image_measurement_groups()
    )
    order = {uid: i for i, uid in enumerate(_tracking_uids(ds))}
    groups.sort(key=lambda g: order.get(str(g.tracking_uid), len(order)))
    out: list[ReadFlag] = []
    for group in groups:
        values: dict[str, str] = {}
        for evaluation in group.get_qualitative_evaluations():
            values[evaluation.name.value] = evaluation.value.value
        measurements = group.get_measurements(name=codes.DCM.Probability)
        region = getattr(group, "roi", None)
        box = None
        if region is not None:
            data = np.asarray(region.value)
            box = (
                float(data[:, 0].min()),
                float(data[:, 1].min()),
                float(data[:, 0].max()),
                float(data[:, 1].max()),
            )
        out.append(
            ReadFlag(
                kind=kinds.get(values.get(table.concept_names["error_kind"].value, ""), "?"),
                severity=severities.get(values.get(table.concept_names["severity"].value, ""), "?"),
                finding_code=group.finding_type.value,
                confidence=float(measurements[0].value) if measurements else float("nan"),
                box=box,
                unverified=values.get(table.concept_names["verification"].value)
                == table.concept_names["unverified"].value,
            )
        )
    return out


def _tracking_uids(ds: Dataset) -> list[str]:
    """Tracking UIDs of the measurement groups, in document order."""
    found: list[str] = []
    for item in getattr(ds, "ContentSequence", []):
        name = (
            item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        )
        if name == codes.DCM.TrackingUniqueIdentifier.value and "UID" in item:
            found.append(str(item.UID))
        found.extend(_tracking_uids(item))
    return found
