"""Pulling studies from a PACS by DIMSE (pynetdicom): C-FIND to find, C-GET or C-MOVE to fetch.

- :meth:`DimseSource.find_studies` asks the PACS (Study Root C-FIND, STUDY level) for the studies
  with a Study Instance UID or an accession number.
- :meth:`DimseSource.instances` lists a study's instances (IMAGE level), so the caller knows the
  total before fetching and which SOP classes to ask for.
- :meth:`DimseSource.get_study` is C-GET: the PACS sends each instance back on the same association
  (RadCheck takes the storage SCP role there), and ``on_instance(data)`` receives each as a Part 10
  byte string exactly as encoded (compressed stays compressed) and answers the C-STORE status.
- :meth:`DimseSource.move_study` is C-MOVE: the PACS sends the instances to another AE (RadCheck's
  own listener, which the PACS must know), and only the counts come back here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicom_io.net.listener import ACCEPTED_TRANSFER_SYNTAXES, Status
from dicom_io.net.pull import PullError

__all__ = ["DimseSource", "RetrieveCounts"]

logger = logging.getLogger(__name__)

# pynetdicom proposes at most 128 presentation contexts; one is the C-GET context.
_MAX_CONTEXTS = 127
_PENDING = (0xFF00, 0xFF01)


@dataclass(frozen=True)
class RetrieveCounts:
    """What the PACS reported at the end of a C-GET / C-MOVE (its sub-operation counts)."""

    completed: int
    failed: int
    warning: int
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0x0000 and self.failed == 0


def _uid(identifier: Dataset | None, keyword: str) -> str:
    if identifier is None:
        return ""
    return str(identifier.get(keyword, "") or "")


@dataclass
class DimseSource:
    """One DIMSE PACS: ``peer_ae`` at ``host:port``; RadCheck calls it as ``calling_ae``."""

    calling_ae: str
    peer_ae: str
    host: str
    port: int
    timeout_s: float = 60.0

    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        return ae

    def _associate(
        self, ae: AE, *, ext_neg: list[Any] | None = None, handlers: list[Any] | None = None
    ) -> Any:
        try:
            assoc = ae.associate(
                self.host,
                self.port,
                ae_title=self.peer_ae,
                ext_neg=ext_neg,
                evt_handlers=handlers,
            )
        except OSError as exc:
            raise PullError(
                f"Cannot reach the PACS {self.peer_ae} at {self.host}:{self.port}: {exc}"
            ) from exc
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted or unreachable"
            raise PullError(
                f"No association with the PACS {self.peer_ae} at {self.host}:{self.port} ({why}): "
                f"check its address and AE title, and that it accepts RadCheck's AE "
                f"{self.calling_ae}."
            )
        return assoc

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = self._associate(ae)
        try:
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                code = int(getattr(status, "Status", -1))
                if code in _PENDING and identifier is not None:
                    yield identifier
                elif code != 0x0000:
                    raise PullError(
                        f"The PACS {self.peer_ae} answered C-FIND with status 0x{code & 0xFFFF:04X}"
                        " (or the connection was lost)."
                    )
        finally:
            assoc.release()

    def find_studies(
        self, *, study_instance_uid: str | None = None, accession_number: str | None = None
    ) -> list[str]:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_instance_uid or ""
        query.AccessionNumber = accession_number or ""
        found = [_uid(i, "StudyInstanceUID") for i in self._find(query)]
        return sorted({uid for uid in found if uid})

    def instances(self, study_instance_uid: str) -> list[tuple[str, str]]:
        """(SOP Class UID, SOP Instance UID) of each instance of the study (IMAGE level C-FIND)."""
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID = study_instance_uid
        query.SeriesInstanceUID = ""
        query.SOPInstanceUID = ""
        query.SOPClassUID = ""
        return [
            (_uid(i, "SOPClassUID"), _uid(i, "SOPInstanceUID"))
            for i in self._find(query)
            if _uid(i, "SOPInstanceUID")
        ]

    def _retrieve_query(self, study_instance_uid: str) -> Dataset:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_instance_uid
        return query

    def get_study(
        self,
        study_instance_uid: str,
        sop_classes: list[str],
        on_instance: Callable[[bytes], int],
    ) -> RetrieveCounts:
        """C-GET one study; each instance arrives on this association through ``on_instance``.

        ``sop_classes`` are the storage SOP classes to accept (from :meth:`instances`). With few
        enough classes each transfer syntax gets its own presentation context, so the PACS can send
        every file as stored (no transcoding); otherwise one context per class lists them all.
        """
        classes = sorted(set(sop_classes))
        if not classes:
            raise PullError("C-GET needs the SOP classes of the study's instances; none given.")
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        syntaxes = list(ACCEPTED_TRANSFER_SYNTAXES)
        if len(classes) * len(syntaxes) <= _MAX_CONTEXTS - 1:
            for sop_class in classes:
                for syntax in syntaxes:
                    ae.add_requested_context(sop_class, [syntax])
        elif len(classes) <= _MAX_CONTEXTS - 1:
            for sop_class in classes:
                ae.add_requested_context(sop_class, syntaxes)
        else:
            raise PullError(
                f"The study has {len(classes)} SOP classes; C-GET can negotiate at most "
                f"{_MAX_CONTEXTS - 1}: retrieve it by C-MOVE or DICOMweb instead."
            )
        roles = [build_role(sop_class, scp_role=True) for sop_class in classes]

        def store(event: Any) -> int:
            try:
                data = event.encoded_dataset(include_meta=True)
            except Exception:
                logger.exception("C-GET: a received data set cannot be encoded")
                return Status.CANNOT_UNDERSTAND
            try:
                return int(on_instance(data))
            except Exception:
                logger.exception("C-GET: storing a received instance failed")
                return Status.PROCESSING_FAILURE

        assoc = self._associate(ae, ext_neg=roles, handlers=[(evt.EVT_C_STORE, store)])
        try:
            return self._follow(
                assoc.send_c_get(
                    self._retrieve_query(study_instance_uid),
                    StudyRootQueryRetrieveInformationModelGet,
                ),
                "C-GET",
            )
        finally:
            assoc.release()

    def move_study(self, study_instance_uid: str, destination_ae: str) -> RetrieveCounts:
        """C-MOVE one study to ``destination_ae`` (an AE the PACS knows, e.g. RadCheck's listener)."""
        ae = self._ae()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = self._associate(ae)
        try:
            return self._follow(
                assoc.send_c_move(
                    self._retrieve_query(study_instance_uid),
                    destination_ae,
                    StudyRootQueryRetrieveInformationModelMove,
                ),
                "C-MOVE",
                hint=f" Check that the PACS knows the move destination {destination_ae} (its list "
                "of modalities, with the listener's host and port).",
            )
        finally:
            assoc.release()

    def _follow(
        self, responses: Iterator[tuple[Dataset, Dataset | None]], what: str, hint: str = ""
    ) -> RetrieveCounts:
        code = -1
        counts = {"completed": 0, "failed": 0, "warning": 0}
        for status, _identifier in responses:
            if "Status" not in status:
                raise PullError(
                    f"The PACS {self.peer_ae} stopped answering the {what} (connection lost or "
                    f"timed out after {self.timeout_s:g} s)."
                )
            code = int(status.Status)
            for key, keyword in (
                ("completed", "NumberOfCompletedSuboperations"),
                ("failed", "NumberOfFailedSuboperations"),
                ("warning", "NumberOfWarningSuboperations"),
            ):
                if keyword in status:
                    counts[key] = int(status.get(keyword) or 0)
        if code not in (0x0000, 0xB000):
            raise PullError(
                f"The PACS {self.peer_ae} answered the {what} with status 0x{code & 0xFFFF:04X}."
                + hint
            )
        return RetrieveCounts(status=code, **counts)
