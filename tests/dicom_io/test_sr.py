"""Result objects (TID 1500 SR, text SR, GSPS): dcmtk accepts them, highdicom reads back the flags,
every finding the checker can raise has a code."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_io.sr import (
    UNVERIFIED,
    ObjectRef,
    ResultFlag,
    ResultProvenance,
    ResultsError,
    ResultUids,
    build_result_objects,
    load_result_codes,
    read_flags,
)
from medvlm.prompts.knowledge import load_knowledge_base
from medvlm.taxonomy import ErrorSubtype, Severity

REPO = Path(__file__).resolve().parents[2]
DCMTK = shutil.which("dsrdump") is not None and shutil.which("dcmpschk") is not None

FLAGS = [
    ResultFlag(
        kind="laterality",
        severity="warning",
        message="The impression puts the effusion on the left; the findings on the right.",
        confidence=0.8,
        sentence="Small left pleural effusion.",
        finding="pleural_effusion",
        box=(100.0, 200.0, 600.0, 700.0),
    ),
    ResultFlag(
        kind="header_mismatch",
        severity="critical",
        message="The report says 'he', the header gives patient sex F.",
        confidence=0.9,
        sentence="He has a cough.",
        finding="sex",
    ),
    ResultFlag(
        kind="insert_finding",
        severity="info",
        message="Pneumothorax reported but not seen.",
        confidence=0.35,
        finding="pneumothorax",
        box=(1500.0, 1800.0, 5000.0, 5000.0),  # runs off the image: clamped
    ),
]
PROVENANCE = ResultProvenance(
    algorithm_version="0.1.0", parameters=("model=none", "text_rules=2026.11")
)


@pytest.fixture
def source(rg1_path: Path) -> Dataset:
    return dcmread(rg1_path, stop_before_pixels=True)


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_sr_round_trips_flags_and_is_marked_unverified(source: Dataset, tmp_path: Path) -> None:
    objects = build_result_objects(source, FLAGS, PROVENANCE)
    sr = dcmread(_save(objects.measurement_report, tmp_path / "sr.dcm"))
    flags = read_flags(sr)
    assert [(f.kind, f.severity) for f in flags] == [(f.kind, f.severity) for f in FLAGS]
    assert [f.finding_code for f in flags] == ["60046008", "H-001", "36118008"]
    assert [f.confidence for f in flags] == pytest.approx([0.8, 0.9, 0.35])
    assert flags[0].box == (100.0, 200.0, 600.0, 700.0)
    assert flags[1].box is None
    assert flags[2].box == (1500.0, 1800.0, source.Columns - 1, source.Rows - 1)
    assert all(f.unverified for f in flags)
    for ds in objects.datasets():
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PreliminaryFlag == "PRELIMINARY"
        assert UNVERIFIED in ds.SeriesDescription
        assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99RADCHECK"
    for ds in (objects.measurement_report, objects.text_report):
        assert ds.CompletionFlag == "PARTIAL"
        assert ds.VerificationFlag == "UNVERIFIED"


def _texts(ds: Dataset) -> list[str]:
    """The report's text items (summary, one per flag, parameters): not the observer context."""
    wanted = {codes.DCM.Summary.value, codes.DCM.Finding.value, codes.DCM.AlgorithmParameters.value}
    return [
        item.TextValue
        for item in ds.ContentSequence
        if "TextValue" in item and item.ConceptNameCodeSequence[0].CodeValue in wanted
    ]


def test_text_sr_carries_messages_and_sentences(source: Dataset) -> None:
    values = _texts(build_result_objects(source, FLAGS, PROVENANCE).text_report)
    assert values[0].startswith(f"{UNVERIFIED}: 3 possible report error(s)")
    assert FLAGS[0].message in values[1]
    assert 'Flagged sentence: "Small left pleural effusion."' in values[1]
    assert "Laterality error" in values[1]
    assert "model=none; text_rules=2026.11" in values[-1]


@pytest.mark.skipif(not DCMTK, reason="dcmtk (dsrdump, dcmpschk) is not installed")
def test_dcmtk_accepts_the_objects(source: Dataset, tmp_path: Path) -> None:
    objects = build_result_objects(source, FLAGS, PROVENANCE)
    for name, ds in (("sr", objects.measurement_report), ("text", objects.text_report)):
        path = _save(ds, tmp_path / f"{name}.dcm")
        done = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr  # strict: no warnings either
        assert "Verification Flag   : UNVERIFIED" in done.stdout
    assert objects.presentation_state is not None
    path = _save(objects.presentation_state, tmp_path / "pr.dcm")
    done = subprocess.run(["dcmpschk", str(path)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Test passed" in output, output
    assert "E:" not in output, output


def test_gsps_draws_each_box_with_a_label(source: Dataset) -> None:
    gsps = build_result_objects(source, FLAGS, PROVENANCE).presentation_state
    assert gsps is not None
    annotation = gsps.GraphicAnnotationSequence[0]
    assert len(annotation.GraphicObjectSequence) == 2
    labels = [t.UnformattedTextValue for t in annotation.TextObjectSequence]
    assert labels == [
        "laterality: Pleural effusion (AI, unverified)",
        "insert_finding: Pneumothorax (AI, unverified)",
    ]
    for graphic in annotation.GraphicObjectSequence:
        xs, ys = graphic.GraphicData[0::2], graphic.GraphicData[1::2]
        assert graphic.NumberOfGraphicPoints == 5 and (xs[0], ys[0]) == (xs[-1], ys[-1])
        assert max(xs) <= source.Columns and max(ys) <= source.Rows


def test_no_boxes_no_gsps_and_no_flags_only_the_text_sr(source: Dataset) -> None:
    boxless = [f for f in FLAGS if f.box is None]
    assert build_result_objects(source, boxless, PROVENANCE).presentation_state is None
    empty = build_result_objects(source, [], PROVENANCE)
    assert empty.measurement_report is None  # TID 1500 needs at least one group
    assert empty.datasets() == [empty.text_report]
    assert "flagged no possible report error" in _texts(empty.text_report)[0]


def test_recheck_is_a_new_series_referencing_its_predecessor(source: Dataset) -> None:
    first = build_result_objects(source, FLAGS, PROVENANCE)
    again = build_result_objects(
        source,
        FLAGS[:1],
        PROVENANCE,
        predecessors=[ObjectRef.of(first.measurement_report), ObjectRef.of(first.text_report)],
    )
    assert again.measurement_report.SeriesInstanceUID != first.measurement_report.SeriesInstanceUID
    assert again.presentation_state is not None and first.presentation_state is not None
    assert again.presentation_state.SeriesInstanceUID != first.presentation_state.SeriesInstanceUID
    for ds in (again.measurement_report, again.text_report):
        referenced = {
            item.ReferencedSOPInstanceUID
            for study in ds.PredecessorDocumentsSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert referenced == {
            first.measurement_report.SOPInstanceUID,
            first.text_report.SOPInstanceUID,
        }
    assert "PredecessorDocumentsSequence" not in first.measurement_report


def test_fixed_uids_make_a_retry_send_the_same_objects(source: Dataset) -> None:
    uids = ResultUids.new()
    one = build_result_objects(source, FLAGS, PROVENANCE, uids=uids)
    two = build_result_objects(source, FLAGS, PROVENANCE, uids=uids)
    assert [d.SOPInstanceUID for d in one.datasets()] == [d.SOPInstanceUID for d in two.datasets()]
    assert one.measurement_report.SOPInstanceUID == uids.measurement_report


def test_bad_input_is_refused_with_a_clear_message(source: Dataset) -> None:
    with pytest.raises(ResultsError, match=r"confidence 1\.5 outside 0\.\.1"):
        ResultFlag(kind="negation", severity="info", message="m", confidence=1.5)
    with pytest.raises(ResultsError, match=r"box \(5, 5, 1, 9\) is not"):
        ResultFlag(kind="negation", severity="info", message="m", confidence=0.5, box=(5, 5, 1, 9))
    unknown = ResultFlag(kind="negation", severity="info", message="m", confidence=0.5, finding="x")
    with pytest.raises(ResultsError, match=r"finding concept 'x' has no code"):
        build_result_objects(source, [unknown], PROVENANCE)
    odd = ResultFlag(kind="typo", severity="info", message="m", confidence=0.5)
    with pytest.raises(ResultsError, match=r"error kind 'typo' has no code"):
        build_result_objects(source, [odd], PROVENANCE)
    no_uid = Dataset()
    no_uid.Rows = no_uid.Columns = 10
    with pytest.raises(ResultsError, match="has no StudyInstanceUID"):
        build_result_objects(no_uid, FLAGS, PROVENANCE)


# The code tables.


def _header_rule_concepts() -> set[str]:
    """The concept argument of every ``self._flag(...)`` call in the header rules."""
    tree = ast.parse((REPO / "medvlm/checking/header_rules.py").read_text())
    concepts: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_flag"
        ):
            argument = node.args[5]
            assert isinstance(argument, ast.Constant), ast.dump(argument)
            concepts.add(argument.value)
    assert concepts, "no header rule found: has _flag(...) been renamed?"
    return concepts


def test_every_finding_the_checker_can_raise_has_a_code() -> None:
    table = load_result_codes()
    kb_ids = set(load_knowledge_base().findings)
    header = _header_rule_concepts()
    missing = sorted((kb_ids | header) - set(table.findings))
    assert not missing, f"add codes for {missing} to dicom_io/data/result_codes.yaml"
    assert table.finding("interval:has increased").value == table.findings["interval"].value
    assert table.finding(None).value == "404684003"
    assert set(table.error_kinds) == {s.value for s in ErrorSubtype}
    assert set(table.severities) == {s.value for s in Severity}


def test_snomed_codes_are_real_and_private_codes_unique() -> None:
    table = load_result_codes()
    entries = [
        e
        for t in (table.findings, table.error_kinds, table.severities, table.concept_names)
        for e in t.values()
    ]
    snomed = {getattr(codes.SCT, name).value: getattr(codes.SCT, name) for name in codes.SCT.dir()}
    for entry in entries:
        assert entry.scheme in {"SCT", "99RADCHECK"}, entry
        if entry.scheme == "SCT":
            assert entry.value in snomed, f"{entry} is not in DICOM's SNOMED CT table"
            known = {
                getattr(codes.SCT, n).meaning
                for n in codes.SCT.dir()
                if getattr(codes.SCT, n).value == entry.value
            }
            assert entry.meaning in known, f"{entry}: DICOM's meanings are {known}"
    private = [e.value for e in entries if e.scheme == "99RADCHECK"]
    assert len(private) == len(set(private)), "a 99RADCHECK code value is used twice"
