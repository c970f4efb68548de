"""read_instance on the real corpus and on synthetic files: kinds, facts, eligibility, errors."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicom_io
from dicom_io import (
    DecodeError,
    DicomIOError,
    InstanceKind,
    InvalidElementError,
    MissingElementError,
    NotDicomError,
    TruncatedFileError,
)
from dicom_io.header import parse_age
from dicom_io.reader import decode_pixels, parse

from .conftest import PYDICOM_TEST_FILES, SC_STORAGE, corpus_file, make_dx

RG_SYNTAXES = ["UNCR", "UNCI", "J2KR", "J2KI"]


@pytest.mark.parametrize("syntax", RG_SYNTAXES)
def test_rg1_every_shipped_syntax_reads_and_decodes(syntax: str) -> None:
    inst = dicom_io.read_instance(corpus_file(f"RG1_{syntax}.dcm"), decode=True)
    assert inst.kind is InstanceKind.IMAGE
    assert inst.modality == "CR"
    assert inst.header.photometric == "MONOCHROME1"
    assert (inst.header.rows, inst.header.columns) == (1955, 1841)
    assert inst.header.view_position == "PA"
    assert inst.header.body_part == "CHEST"
    assert inst.header.patient_sex == "F"
    assert inst.header.portable is False  # PA needs the wall stand
    assert inst.eligibility.eligible, inst.eligibility.reasons


@pytest.mark.parametrize("syntax", RG_SYNTAXES)
def test_rg3_every_shipped_syntax_is_an_image_but_not_a_chest(syntax: str) -> None:
    inst = dicom_io.read_instance(corpus_file(f"RG3_{syntax}.dcm"), decode=True)
    assert inst.kind is InstanceKind.IMAGE
    assert not inst.eligibility.eligible
    assert any("EXTREMITY is not the chest" in r for r in inst.eligibility.reasons)


def test_lossless_syntaxes_decode_to_identical_pixels(rg1_transcoded: dict[str, Path]) -> None:
    reference = decode_pixels(parse(corpus_file("RG1_UNCR.dcm"), full=True).dataset)
    others = [corpus_file("RG1_J2KR.dcm"), *rg1_transcoded.values()]
    for path in others:
        inst = dicom_io.read_instance(path, decode=True)
        assert inst.eligibility.eligible
        pixels = decode_pixels(parse(path, full=True).dataset)
        np.testing.assert_array_equal(pixels, reference, err_msg=path.name)


def test_transcoded_syntaxes_are_recorded(rg1_transcoded: dict[str, Path]) -> None:
    seen = {dicom_io.read_instance(p).transfer_syntax_uid for p in rg1_transcoded.values()}
    assert seen == {
        pydicom.uid.RLELossless,
        pydicom.uid.JPEGLSLossless,
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.ExplicitVRBigEndian,
    }


@pytest.mark.parametrize("decode", [False, True])
def test_deflated_image_reads_on_both_paths(decode: bool) -> None:
    inst = dicom_io.read_instance(corpus_file("image_dfl.dcm"), decode=decode)
    assert inst.kind is InstanceKind.IMAGE
    assert inst.transfer_syntax_uid == pydicom.uid.DeflatedExplicitVRLittleEndian


def test_bytes_and_path_give_the_same_instance() -> None:
    path = corpus_file("RG1_J2KR.dcm")
    assert dicom_io.read_instance(path) == dicom_io.read_instance(path.read_bytes())


def test_tiny_monochrome1_cr_lateral_cspine() -> None:
    path = PYDICOM_TEST_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"
    inst = dicom_io.read_instance(path, decode=True)
    assert inst.kind is InstanceKind.IMAGE
    assert inst.header.photometric == "MONOCHROME1"
    assert inst.header.view_position == "LL"
    assert inst.eligibility.reasons == ("body part CSPINE is not the chest",)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("CT_small.dcm", "modality CT is not a radiograph"),
        ("MR_small.dcm", "modality MR is not a radiograph"),
        ("SC_rgb.dcm", "colour image (PhotometricInterpretation RGB)"),
        ("US1_J2KR.dcm", "colour image (PhotometricInterpretation YBR_RCT)"),
        ("emri_small.dcm", "multi-frame image (10 frames)"),
        ("OBXXXX1A.dcm", "colour image (PhotometricInterpretation PALETTE COLOR)"),
    ],
)
def test_images_refused_for_the_model_with_the_reason(name: str, reason: str) -> None:
    inst = dicom_io.read_instance(corpus_file(name))
    assert inst.kind is InstanceKind.IMAGE
    assert not inst.eligibility.eligible
    assert any(reason in r for r in inst.eligibility.reasons), inst.eligibility.reasons


@pytest.mark.parametrize("name", ["test-SR.dcm", "reportsi.dcm"])
def test_structured_reports_are_recognised_not_checked(name: str) -> None:
    inst = dicom_io.read_instance(corpus_file(name), decode=True)
    assert inst.kind is InstanceKind.STRUCTURED_REPORT
    assert inst.eligibility.reasons == ("not an image (structured report)",)


def test_truncated_file_is_caught_on_the_header_only_path() -> None:
    with pytest.raises(TruncatedFileError, match=r"\(7FE0,0010\) 'PixelData'.*62 bytes"):
        dicom_io.read_instance(corpus_file("MR_truncated.dcm"))


def test_truncated_file_is_caught_when_decoding() -> None:
    with pytest.raises(DecodeError, match="less than expected"):
        dicom_io.read_instance(corpus_file("MR_truncated.dcm"), decode=True)


@pytest.mark.parametrize(
    "name", ["no_meta.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"]
)
def test_missing_file_meta_is_not_dicom(name: str) -> None:
    with pytest.raises(NotDicomError, match=r"'DICM' prefix.*File Meta Information missing"):
        dicom_io.read_instance(corpus_file(name))


def test_missing_transfer_syntax_in_meta() -> None:
    with pytest.raises(MissingElementError, match=r"\(0002,0010\) 'Transfer Syntax UID'"):
        dicom_io.read_instance(corpus_file("meta_missing_tsyntax.dcm"))


def test_corrupt_jpeg2000_in_the_corpus_gets_a_decode_error() -> None:
    path = corpus_file("JPEG2000-embedded-sequence-delimiter.dcm")
    dicom_io.read_instance(path)  # the header is fine
    with pytest.raises(DecodeError, match=r"JPEG 2000.*corrupt or truncated"):
        dicom_io.read_instance(path, decode=True)


def test_corrupted_j2k_codestream_gets_a_decode_error() -> None:
    data = bytearray(corpus_file("RG1_J2KR.dcm").read_bytes())
    soc = data.index(b"\xff\x4f\xff\x51")  # start of codestream + SIZ marker
    data[soc : soc + 64] = b"\x00" * 64
    with pytest.raises(DecodeError, match=r"\(7FE0,0010\) 'Pixel Data'.*JPEG 2000"):
        dicom_io.read_instance(bytes(data), decode=True)


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x00" * 128 + b"DICM", b"\x00" * 4096])
def test_garbage_is_not_dicom(data: bytes) -> None:
    with pytest.raises(DicomIOError):
        dicom_io.read_instance(data)


def test_missing_path_is_a_dicom_io_error(tmp_path: Path) -> None:
    with pytest.raises(NotDicomError, match=r"Unable to open 'absent\.dcm'"):
        dicom_io.read_instance(tmp_path / "absent.dcm")


def test_synthetic_dx_header_facts() -> None:
    inst = dicom_io.read_instance(make_dx())
    facts = inst.header
    assert facts.patient_sex == "M"
    assert facts.patient_age_years == 45.0
    assert facts.view_position == "AP"
    assert facts.portable is True
    assert facts.acquisition_datetime == datetime(2024, 1, 2, 10, 30)
    assert facts.modality == "DX"
    assert inst.accession_number == "ACC1"
    assert inst.eligibility.eligible
    json.dumps(inst.to_dict())  # JSON-serialisable, attributes included
    assert inst.attributes["ImageType"] == ["ORIGINAL", "PRIMARY"]
    assert inst.attributes["Rows"] == 256


def test_age_from_birth_date_when_patient_age_is_absent() -> None:
    inst = dicom_io.read_instance(
        make_dx(drop=("PatientAge",), PatientBirthDate="19840102", StudyDate="20240102")
    )
    assert inst.header.patient_age_years == pytest.approx(40.0, abs=0.01)


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("045Y", 45.0),
        ("006M", 0.5),
        ("002W", round(14 / 365.25, 4)),
        ("010D", round(10 / 365.25, 4)),
        ("4", None),
        ("", None),
    ],
)
def test_parse_age(text: str, years: float | None) -> None:
    assert parse_age(text) == years


def test_phi_is_stored_but_not_in_repr() -> None:
    inst = dicom_io.read_instance(make_dx())
    assert inst.patient_name == "Test^Synthetic"
    assert inst.patient_id == "SYN-1"
    assert "Test^Synthetic" not in repr(inst)
    assert "SYN-1" not in repr(inst)
    assert "patient_name" not in inst.to_dict()


@pytest.mark.parametrize(
    ("keyword", "pattern"),
    [
        ("SOPInstanceUID", r"\(0008,0018\) 'SOPInstanceUID' element is missing"),
        ("StudyInstanceUID", r"\(0020,000D\) 'StudyInstanceUID' element is missing"),
        ("SeriesInstanceUID", r"\(0020,000E\) 'SeriesInstanceUID' element is missing"),
        ("Rows", r"\(0028,0010\) 'Rows' element is missing or empty in an image"),
        ("PhotometricInterpretation", r"\(0028,0004\) 'PhotometricInterpretation'"),
    ],
)
def test_missing_required_element_names_tag_and_keyword(keyword: str, pattern: str) -> None:
    with pytest.raises(MissingElementError, match=pattern):
        dicom_io.read_instance(make_dx(drop=(keyword,)))


@pytest.mark.parametrize("uid", ["../../../tmp/evil", "1.2/3", "..", "1.2 3"])
def test_uid_that_cannot_address_a_study_is_refused(uid: str) -> None:
    with pytest.warns(UserWarning):  # pydicom warns when writing an invalid UID
        data = make_dx(StudyInstanceUID=uid)
    with pytest.raises(InvalidElementError, match="'StudyInstanceUID' value is not usable"):
        dicom_io.read_instance(data)


def test_hash_style_uid_is_accepted() -> None:
    with pytest.warns(UserWarning):  # pydicom warns when writing a non-conformant UID
        data = make_dx(StudyInstanceUID="a3f9c2e1-77b0_4d2e.99")
    inst = dicom_io.read_instance(data)
    assert inst.study_instance_uid == "a3f9c2e1-77b0_4d2e.99"


def test_image_without_pixel_data() -> None:
    with pytest.raises(MissingElementError, match=r"no \(7FE0,0010\) 'PixelData' element"):
        dicom_io.read_instance(make_dx(with_pixels=False))


def test_unusable_uid() -> None:
    with pytest.warns(UserWarning, match="exceeds the maximum length of 64"):  # pydicom, writing
        data = make_dx(SOPInstanceUID="1.2.3" + ".4" * 40)
    with pytest.raises(
        InvalidElementError, match=r"\(0008,0018\) 'SOPInstanceUID' value is not usable"
    ):
        dicom_io.read_instance(data)


def test_zero_rows_is_invalid() -> None:
    with pytest.raises(InvalidElementError, match=r"\(0028,0010\) 'Rows' value '0'"):
        dicom_io.read_instance(make_dx(Rows=0))


def test_secondary_capture_not_eligible() -> None:
    inst = dicom_io.read_instance(make_dx(SOPClassUID=SC_STORAGE, Modality="OT"))
    assert not inst.eligibility.eligible
    assert any("secondary capture" in r for r in inst.eligibility.reasons)


def test_wrong_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"bytes or pathlib\.Path"):
        dicom_io.read_instance("a/path/as/str")  # type: ignore[arg-type]


def test_view_falls_back_on_view_code_sequence() -> None:
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue = "399348003"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "postero-anterior"
    inst = dicom_io.read_instance(make_dx(drop=("ViewPosition",), ViewCodeSequence=[code]))
    assert inst.header.view_position == "PA"
    assert inst.attributes["ViewCodeMeaning"] == "postero-anterior"
    assert "ViewPosition" not in inst.attributes


def test_unknown_transfer_syntax_is_stored_but_not_decoded() -> None:
    data = make_dx()
    known = b"1.2.840.10008.1.2.1\x00"
    assert data.count(known) == 1
    data = data.replace(known, b"1.2.840.10008.9.9.9\x00")
    inst = dicom_io.read_instance(data)
    assert inst.transfer_syntax_uid == "1.2.840.10008.9.9.9"
    with pytest.raises(
        dicom_io.UnsupportedTransferSyntaxError, match=r"'1\.2\.840\.10008\.9\.9\.9' is not a known"
    ):
        dicom_io.read_instance(data, decode=True)
    with pytest.raises(dicom_io.UnsupportedTransferSyntaxError):
        dicom_io.render(data)
