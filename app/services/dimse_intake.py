"""C-STORE intake for the DICOM listener: each instance through the same ingest service as the
upload and STOW-RS routes, stored durably before the status is answered; rejected associations
go to the audit trail."""

from __future__ import annotations

import errno
import logging
import shutil
from dataclasses import dataclass
from functools import partial

import dicom_io
from app.db.session import Database
from app.services import audit
from app.services.ingest import IngestLimits, ingest_instance
from app.services.storage import ContentStore
from dicom_io.net import Rejection, Status

__all__ = ["DimseIntake"]

logger = logging.getLogger(__name__)


@dataclass
class DimseIntake:
    """``store`` and ``rejected`` are the listener's callbacks; ``limits`` bound the inflated and
    decoded pixel sizes (the settings': RADCHECK_STORAGE__MAX_INFLATED_BYTES, ..._MAX_PIXEL_BYTES)."""

    db: Database
    store: ContentStore
    min_free_bytes: int
    limits: IngestLimits

    def store_instance(self, data: bytes, calling_ae: str) -> int:
        """The C-STORE status for one received instance; 0x0000 only once it is committed."""
        try:
            self.store.root.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.store.root).free < self.min_free_bytes + len(data):
                logger.error("listener: free disk space below the configured minimum")
                return Status.OUT_OF_RESOURCES
            outcome = self.db.run(
                partial(
                    ingest_instance,
                    store=self.store,
                    data=data,
                    actor=f"dimse:{calling_ae}",
                    source="dimse",
                    limits=self.limits,
                )
            )
        except dicom_io.LimitExceededError as exc:
            logger.warning("listener: instance refused: %s", exc)
            return Status.OUT_OF_RESOURCES
        except (dicom_io.MissingElementError, dicom_io.InvalidElementError):
            return Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        except dicom_io.DicomIOError:
            return Status.CANNOT_UNDERSTAND
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                logger.error("listener: disk full")
                return Status.OUT_OF_RESOURCES
            logger.exception("listener: storage error")
            return Status.PROCESSING_FAILURE
        if outcome.conflict:
            return Status.DUPLICATE_SOP_INSTANCE
        return Status.SUCCESS

    def rejected(self, rejection: Rejection) -> None:
        def record(session: object) -> None:
            audit.record(
                session,  # type: ignore[arg-type]
                actor=f"dimse:{rejection.calling_ae[:16]}",
                action="association.rejected",
                object_type="association",
                details={
                    "reason": rejection.reason,
                    "calling_ae": rejection.calling_ae[:16],
                    "called_ae": rejection.called_ae[:16],
                    "peer": rejection.peer,
                },
            )

        self.db.run(record)
