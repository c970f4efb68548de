"""RadCheck DICOM side: reading and validation, image selection, pixels, study completeness,
sending (C-STORE, STOW-RS), DICOM JSON for DICOMweb, and the result objects (SR, GSPS).

The public surface is ``__all__`` here and, for the network services (the C-STORE listener and
PACS retrieval over DIMSE or DICOMweb), the ``__all__`` of the sub-package ``dicom_io.net``; other
packages import only from these two.
"""

from dicom_io.errors import (
    DecodeError,
    DicomIOError,
    InvalidDicomError,
    InvalidElementError,
    LimitExceededError,
    MissingElementError,
    NotDicomError,
    NotEligibleError,
    SelectionRulesError,
    TruncatedFileError,
    UnsupportedTransferSyntaxError,
)
from dicom_io.header import SELECTION_KEYWORDS, parse_age
from dicom_io.instance import DicomInstance, Eligibility, HeaderFacts, InstanceKind, JSONValue
from dicom_io.limits import DecodeLimits
from dicom_io.pixels import PercentileWindow, RenderedImage, Window, read_and_render, render
from dicom_io.reader import read_instance
from dicom_io.selection import (
    CandidateReason,
    EligibilityPolicy,
    SelectionCandidate,
    SelectionDecision,
    SelectionRules,
    select_image,
)
from dicom_io.send import SendError, SendResult, c_store, stow_rs
from dicom_io.sr import (
    UNVERIFIED,
    ObjectRef,
    ReadFlag,
    ResultCodes,
    ResultFlag,
    ResultObjects,
    ResultProvenance,
    ResultsError,
    ResultUids,
    build_result_objects,
    load_result_codes,
    read_flags,
)
from dicom_io.study import study_ready
from dicom_io.web import (
    QIDO_ATTRIBUTES,
    FailureReason,
    StowFailure,
    StowReference,
    dataset_json,
    failure_reason_for,
    instance_metadata,
    peek_sop_uids,
    stow_response,
)

__all__ = [
    "QIDO_ATTRIBUTES",
    "SELECTION_KEYWORDS",
    "UNVERIFIED",
    "CandidateReason",
    "DecodeError",
    "DecodeLimits",
    "DicomIOError",
    "DicomInstance",
    "Eligibility",
    "EligibilityPolicy",
    "FailureReason",
    "HeaderFacts",
    "InstanceKind",
    "InvalidDicomError",
    "InvalidElementError",
    "JSONValue",
    "LimitExceededError",
    "MissingElementError",
    "NotDicomError",
    "NotEligibleError",
    "ObjectRef",
    "PercentileWindow",
    "ReadFlag",
    "RenderedImage",
    "ResultCodes",
    "ResultFlag",
    "ResultObjects",
    "ResultProvenance",
    "ResultUids",
    "ResultsError",
    "SelectionCandidate",
    "SelectionDecision",
    "SelectionRules",
    "SelectionRulesError",
    "SendError",
    "SendResult",
    "StowFailure",
    "StowReference",
    "TruncatedFileError",
    "UnsupportedTransferSyntaxError",
    "Window",
    "build_result_objects",
    "c_store",
    "dataset_json",
    "failure_reason_for",
    "instance_metadata",
    "load_result_codes",
    "parse_age",
    "peek_sop_uids",
    "read_and_render",
    "read_flags",
    "read_instance",
    "render",
    "select_image",
    "stow_response",
    "stow_rs",
    "study_ready",
]
