"""The export worker: claim a due export, build its DICOM objects, send them, record the outcome."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from pydicom.errors import InvalidDicomError

import dicom_io
from app.db.session import Database
from app.services import exports
from app.settings import ExportSettings, PacsSettings

__all__ = ["ExportRunner"]

logger = logging.getLogger(__name__)


class ExportRunner:
    """Sends exports; driven by the check worker's loop (one export per turn)."""

    def __init__(
        self,
        db: Database,
        *,
        files_dir: Path,
        export: ExportSettings,
        pacs: PacsSettings,
        worker_id: str,
        lease_s: float = 120.0,
    ) -> None:
        self.db = db
        self.files_dir = files_dir
        self.export = export
        self.pacs = pacs
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_s)

    def run_once(self) -> bool:
        """Claim and send at most one export; True if one was attempted."""
        with self.db.session() as session:
            export_id = exports.claim_next_export(
                session, worker_id=self.worker_id, lease=self.lease
            )
        if export_id is None:
            return False
        objects: dicom_io.ResultObjects | None = None
        error: str | None = None
        try:
            with self.db.session() as session:
                work = exports.load_export(
                    session, export_id=export_id, files_dir=self.files_dir, worker_id=self.worker_id
                )
            if work is None:
                return True
            objects = work.objects
            self._send(work)
        except (dicom_io.DicomIOError, InvalidDicomError, OSError, ValueError, RuntimeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("export %s failed: %s", export_id, type(exc).__name__)
        with self.db.session() as session:
            exports.finish_export(
                session,
                export_id=export_id,
                worker_id=self.worker_id,
                objects=objects,
                error=error,
                backoff_s=self.export.retry_backoff_s,
            )
        logger.info("export %s %s", export_id, "sent" if error is None else "attempt failed")
        return True

    def _send(self, work: exports.ExportWork) -> None:
        node = self.pacs.node(work.node_name)
        if node is None:
            raise dicom_io.SendError(
                f"PACS node {work.node_name!r} is no longer configured (RADCHECK_PACS__NODES)"
            )
        datasets = work.objects.datasets()
        if work.method == "stow-rs":
            if node.dicomweb_url is None:
                raise dicom_io.SendError(f"PACS node {node.name!r} has no dicomweb_url")
            dicom_io.stow_rs(
                datasets,
                url=node.dicomweb_url,
                username=node.username,
                password=None if node.password is None else node.password.get_secret_value(),
                bearer_token=None
                if node.bearer_token is None
                else node.bearer_token.get_secret_value(),
                timeout_s=node.timeout_s,
            )
        else:
            if node.ae_title is None or node.host is None or node.port is None:
                raise dicom_io.SendError(f"PACS node {node.name!r} has no AE title/host/port")
            dicom_io.c_store(
                datasets,
                ae_title=node.ae_title,
                host=node.host,
                port=node.port,
                calling_ae_title=self.pacs.calling_ae_title,
                timeout_s=node.timeout_s,
            )
