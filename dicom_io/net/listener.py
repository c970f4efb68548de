"""A DICOM C-STORE SCP (pynetdicom): C-ECHO, every storage SOP class, the decodable transfer syntaxes.

The listener knows nothing of where instances go: ``on_store(data, calling_ae)`` receives each
instance as a DICOM Part 10 byte string exactly as the peer encoded it (compressed stays
compressed) and returns the DIMSE status to answer, so the caller decides durability (the status
must only be 0x0000 once the instance is safely stored). Associations from an unexpected called AE
title, a calling AE title not on the allow-list, or a peer address outside the allowed networks are
rejected with A-ASSOCIATE-RJ and reported to ``on_reject``.

:meth:`StoreListener.drain` is the graceful stop: stop accepting, let running associations finish
within a deadline, then abort what is left (the sender re-sends what was not acknowledged).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "ListenerConfig",
    "Rejection",
    "Status",
    "StoreListener",
]

logger = logging.getLogger(__name__)

# Uncompressed, plus every compressed syntax the installed decoders read (pylibjpeg-libjpeg,
# -openjpeg, -rle, pyjpegls); deflate is decoded by pydicom itself.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
)


class Status:
    """C-STORE response statuses (PS3.4 B.2.3)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111


@dataclass(frozen=True)
class ListenerConfig:
    ae_title: str
    host: str
    port: int
    allowed_calling_aes: Sequence[str]
    allowed_peers: Sequence[str] = ()
    max_associations: int = 10
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0


@dataclass(frozen=True)
class Rejection:
    """An association that was refused (no PHI: AE titles and the peer address only)."""

    calling_ae: str
    called_ae: str
    peer: str
    reason: str


StoreHandler = Callable[[bytes, str], int]
RejectHandler = Callable[[Rejection], None]


@dataclass
class StoreListener:
    """One C-STORE SCP on one port. ``start()`` returns once it listens."""

    config: ListenerConfig
    on_store: StoreHandler
    on_reject: RejectHandler = field(default=lambda _r: None)
    _server: Any = None
    _draining: threading.Event = field(default_factory=threading.Event)
    _networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(p, strict=False) for p in self.config.allowed_peers]
        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations
        ae.acse_timeout = self.config.acse_timeout_s
        ae.dimse_timeout = self.config.dimse_timeout_s
        ae.network_timeout = self.config.network_timeout_s
        ae.add_supported_context(Verification, list(ACCEPTED_TRANSFER_SYNTAXES))
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), list(ACCEPTED_TRANSFER_SYNTAXES))
        self._ae = ae

    @property
    def port(self) -> int:
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._requested),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_C_ECHO, lambda _event: Status.SUCCESS),
        ]
        self._server = self._ae.start_server(
            (self.config.host, self.config.port), block=False, evt_handlers=handlers
        )
        logger.info("DICOM listener %s on %s:%d", self.config.ae_title, self.config.host, self.port)

    def active(self) -> int:
        """Associations in progress."""
        if self._server is None:
            return 0
        return len(self._server.active_associations)

    def drain(self, timeout_s: float) -> int:
        """Stop accepting, wait up to ``timeout_s`` for running associations, abort the rest.

        Returns how many associations were aborted.
        """
        self._draining.set()
        if self._server is None:
            return 0
        server, self._server = self._server, None
        server.shutdown()  # closes the listening socket; running associations carry on
        deadline = time.monotonic() + timeout_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        left = list(server.active_associations)
        for assoc in left:
            assoc.abort()
        for assoc in left:
            assoc.join(timeout=10)
        if left:
            logger.warning("DICOM listener: aborted %d association(s) at shutdown", len(left))
        return len(left)

    # event handlers
    def _requested(self, event: Any) -> None:
        assoc = event.assoc
        rq = assoc.requestor
        calling = str(rq.primitive.calling_ae_title).strip()
        called = str(rq.primitive.called_ae_title).strip()
        peer = str(rq.address)
        reason: str | None = None
        rsd = (0x01, 0x01, 0x01)
        if self._draining.is_set():
            reason, rsd = "shutting down", (0x02, 0x03, 0x01)
        elif called != self.config.ae_title.strip():
            reason, rsd = "called AE title not recognised", (0x01, 0x01, 0x07)
        elif calling not in {a.strip() for a in self.config.allowed_calling_aes}:
            reason, rsd = "calling AE title not on the allow-list", (0x01, 0x01, 0x03)
        elif self._networks and not self._peer_allowed(peer):
            reason, rsd = "peer address not on the allow-list", (0x01, 0x01, 0x01)
        if reason is None:
            return
        logger.warning("DICOM listener: rejected association (%s)", reason)
        assoc.acse.send_reject(*rsd)
        assoc.is_rejected = True
        try:
            self.on_reject(Rejection(calling, called, peer, reason))
        except Exception:
            logger.exception("DICOM listener: recording a rejected association failed")
        assoc.kill()

    def _peer_allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def _store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception:
            logger.exception("DICOM listener: the received data set cannot be encoded")
            return Status.CANNOT_UNDERSTAND
        try:
            return int(self.on_store(data, calling))
        except Exception:
            logger.exception("DICOM listener: storing an instance failed")
            return Status.PROCESSING_FAILURE
