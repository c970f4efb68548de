"""DICOM networking: the C-STORE listener and PACS retrieval (pynetdicom, dicomweb-client)."""

from dicom_io.net.dimse_pull import DimseSource, RetrieveCounts
from dicom_io.net.listener import (
    ACCEPTED_TRANSFER_SYNTAXES,
    ListenerConfig,
    Rejection,
    Status,
    StoreListener,
)
from dicom_io.net.pull import DicomWebSource, PullError, RemoteInstance

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "DicomWebSource",
    "DimseSource",
    "ListenerConfig",
    "PullError",
    "Rejection",
    "RemoteInstance",
    "RetrieveCounts",
    "Status",
    "StoreListener",
]
