"""Pulling studies from a PACS by DICOMweb (QIDO-RS to find, WADO-RS to fetch; dicomweb-client)."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from dicom_io.errors import DicomIOError

__all__ = ["DicomWebSource", "PullError", "RemoteInstance"]

logger = logging.getLogger(__name__)


class PullError(DicomIOError):
    """The PACS could not be searched or an instance could not be fetched."""


@dataclass(frozen=True)
class RemoteInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


def _value(item: Mapping[str, Any], tag: str) -> str:
    element = item.get(tag)
    if isinstance(element, dict):
        values = element.get("Value")
        if isinstance(values, list) and values:
            return str(values[0])
    return ""


@dataclass
class DicomWebSource:
    """One DICOMweb PACS (``url`` is its root, e.g. http://orthanc:8042/dicom-web)."""

    url: str
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        session = (
            create_session_from_user_pass(self.username, self.password or "")
            if self.username
            else requests.Session()
        )
        headers = {"Authorization": f"Bearer {self.bearer_token}"} if self.bearer_token else None
        self._client = DICOMwebClient(
            self.url, session=session, headers=headers, timeout=self.timeout_s
        )

    def find_studies(
        self, *, study_instance_uid: str | None = None, accession_number: str | None = None
    ) -> list[str]:
        """Study Instance UIDs matching the UID or the accession number."""
        filters = {}
        if study_instance_uid:
            filters["StudyInstanceUID"] = study_instance_uid
        if accession_number:
            filters["AccessionNumber"] = accession_number
        try:
            found = self._client.search_for_studies(search_filters=filters)
        except (requests.RequestException, ValueError) as exc:
            raise PullError(f"QIDO-RS study search at {self.url} failed: {exc}") from exc
        return sorted({_value(item, "0020000D") for item in found} - {""})

    def instances(self, study_instance_uid: str) -> list[RemoteInstance]:
        """Every instance of a study (QIDO-RS instance search, paged)."""
        out: list[RemoteInstance] = []
        offset = 0
        while True:
            try:
                page = self._client.search_for_instances(
                    study_instance_uid=study_instance_uid, offset=offset, limit=500
                )
            except (requests.RequestException, ValueError) as exc:
                raise PullError(f"QIDO-RS instance search at {self.url} failed: {exc}") from exc
            for item in page:
                out.append(
                    RemoteInstance(
                        study_instance_uid,
                        _value(item, "0020000E"),
                        _value(item, "00080018"),
                    )
                )
            if len(page) < 500:
                return out
            offset += len(page)

    def fetch(self, remote: RemoteInstance) -> bytes:
        """One instance as DICOM Part 10 bytes, in the transfer syntax the PACS holds."""
        try:
            ds = self._client.retrieve_instance(
                remote.study_instance_uid,
                remote.series_instance_uid,
                remote.sop_instance_uid,
                media_types=(("application/dicom", "*"),),
            )
        except (requests.RequestException, ValueError) as exc:
            raise PullError(
                f"WADO-RS retrieval of instance {remote.sop_instance_uid} failed: {exc}"
            ) from exc
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()
