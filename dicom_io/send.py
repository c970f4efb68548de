"""Sending DICOM objects to a remote node: STOW-RS (dicomweb-client) or C-STORE (pynetdicom).

C-STORE requests one presentation context per (SOP class, transfer syntax) actually sent: a context
listing several syntaxes gets one accepted, and then an object in another syntax cannot be sent
(specs/pacs.md). Every failure is a :class:`SendError` whose message names the node and what to check;
messages never contain patient data.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.errors import DicomIOError

__all__ = ["SendError", "SendResult", "c_store", "stow_rs"]

logger = logging.getLogger(__name__)


class SendError(DicomIOError):
    """Objects could not be sent to (or were refused by) the remote node."""


@dataclass(frozen=True)
class SendResult:
    """What the node acknowledged."""

    sent: tuple[str, ...]
    """SOP Instance UIDs the node stored."""
    method: str


def _prepared(ds: Dataset) -> Dataset:
    """The dataset as a Part 10 object would carry it (file meta with its transfer syntax)."""
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        return dcmread(buffer)
    return ds


def stow_rs(
    datasets: Sequence[Dataset],
    *,
    url: str,
    username: str | None = None,
    password: str | None = None,
    bearer_token: str | None = None,
    timeout_s: float = 60.0,
    study_instance_uid: str | None = None,
) -> SendResult:
    """Store ``datasets`` with one STOW-RS request to the DICOMweb root ``url``."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if username is not None:
        session.auth = (username, password or "")
    headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
    client = DICOMwebClient(url=url, session=session, headers=headers, timeout=timeout_s)
    client.set_http_retry_params(retry=False)  # the export job retries, with its error kept
    try:
        response = client.store_instances(
            [_prepared(ds) for ds in datasets], study_instance_uid=study_instance_uid
        )
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise SendError(
            f"STOW-RS to {url} answered HTTP {status}: the node refused the objects "
            "(check its credentials, its storage and that it accepts SR and GSPS)"
        ) from exc
    except requests.RequestException as exc:
        raise SendError(
            f"STOW-RS to {url} failed: {type(exc).__name__} (is the node up and the URL right?)"
        ) from exc
    finally:
        session.close()
    failed = getattr(response, "FailedSOPSequence", None) or []
    if failed:  # DICOMweb plugin 1.7 always sends the sequence: its length is what counts
        reasons = sorted({f"0x{int(item.FailureReason):04X}" for item in failed})
        raise SendError(
            f"STOW-RS to {url}: {len(failed)} of {len(datasets)} object(s) refused "
            f"(failure reasons {', '.join(reasons)})"
        )
    return SendResult(sent=tuple(str(ds.SOPInstanceUID) for ds in datasets), method="stow-rs")


def c_store(
    datasets: Sequence[Dataset],
    *,
    ae_title: str,
    host: str,
    port: int,
    calling_ae_title: str,
    timeout_s: float = 60.0,
) -> SendResult:
    """Send ``datasets`` by C-STORE over one association to ``ae_title``@``host``:``port``."""
    from pynetdicom import AE

    prepared = [_prepared(ds) for ds in datasets]
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    contexts = sorted(
        {
            (
                str(ds.SOPClassUID),
                str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)),
            )
            for ds in prepared
        }
    )
    if len(contexts) > 128:
        raise SendError(f"{len(contexts)} presentation contexts needed; at most 128 fit")
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    where = f"{ae_title}@{host}:{port}"
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted or unreachable"
        raise SendError(
            f"C-STORE to {where}: association {reason} (is the node up, and does it know "
            f"calling AE title {calling_ae_title!r}?)"
        )
    sent: list[str] = []
    try:
        for ds in prepared:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise SendError(
                    f"C-STORE to {where}: no response for an object (timeout or aborted association)"
                )
            if int(code) not in (0x0000, 0xB000, 0xB006, 0xB007):
                raise SendError(f"C-STORE to {where}: the node answered status 0x{int(code):04X}")
            sent.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return SendResult(sent=tuple(sent), method="c-store")
