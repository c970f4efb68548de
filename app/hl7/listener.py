"""The MLLP listener: HL7 v2 messages over TCP, one ACK per message, after the report is stored.

MLLP frames are ``0x0B <message> 0x1C 0x0D``. The framing is read here (a few lines) rather than
with python-hl7's stream reader so that a wrong start byte is refused at once, the size bound applies
before the end of the frame arrives, and an idle or half-sent connection times out; parsing, escapes
and mapping are python-hl7's (see ``app.services.oru``).

- Only peers in the allow-list may connect (MLLP has no authentication); it binds to loopback by
  default.
- Several messages per connection, processed in order; the ACK (AA) is written only after the
  message's transaction has committed. A connection dropped before the ACK leaves the sender to
  re-send: the duplicate (same MSH-10) is recognised and stored once.
- Bad framing, an oversized or unreadable message: a log line naming the problem, an AR where the
  message header can be read, and the connection is closed. Nothing is stored for it.
- Logs name peers, surrogate ids and MSH-10, never patient identifiers or report text.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from app.services.oru import AckCode, NotHl7Error, build_ack, decode_message, parse_header
from app.services.report_intake import IntakeResult

__all__ = ["Hl7Listener", "ListenerConfig", "frame"]

logger = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_BETWEEN_FRAMES = b"\r\n \t"


def frame(message: bytes) -> bytes:
    """One MLLP frame."""
    return START_BLOCK + message + END_BLOCK


class FramingError(Exception):
    """The byte stream is not MLLP; the connection is closed."""


class OversizedError(Exception):
    def __init__(self, size: int, head: bytes) -> None:
        super().__init__(size)
        self.size = size
        self.head = head


@dataclass(frozen=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 2575
    allowed_peers: Sequence[str] = ("127.0.0.1/32", "::1/128")
    max_message_bytes: int = 1024 * 1024
    idle_timeout_s: float = 60.0
    application: str = "RADCHECK"
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, default=()
    )

    def __post_init__(self) -> None:
        nets = tuple(ipaddress.ip_network(p, strict=False) for p in self.allowed_peers)
        object.__setattr__(self, "networks", nets)

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


class Hl7Listener:
    """An asyncio MLLP server; ``receive`` stores one message (blocking, run in a thread)."""

    def __init__(self, receive: Callable[[bytes], IntakeResult], config: ListenerConfig) -> None:
        self.receive = receive
        self.config = config
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], bool] = {}  # task -> busy with a message
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=2**16
        )
        sock = self._server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))
        logger.info(
            "hl7 listener on %s:%s (MLLP; peers %s; max %d bytes per message; idle %.0f s)",
            self.address[0],
            self.address[1],
            ", ".join(self.config.allowed_peers),
            self.config.max_message_bytes,
            self.config.idle_timeout_s,
        )
        return self.address

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop accepting; let messages being stored finish (up to ``grace_s``), drop idle ones."""
        if self._server is not None:
            self._server.close()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        pending = list(self._connections)
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        logger.info("hl7 listener stopped")

    async def _read_frame(self, reader: asyncio.StreamReader, buf: bytearray) -> bytes | None:
        limit = self.config.max_message_bytes
        while True:
            while buf and buf[0] in _BETWEEN_FRAMES:
                del buf[0]
            if buf:
                if buf[0:1] != START_BLOCK:
                    raise FramingError(
                        f"expected the MLLP start byte 0x0B, got 0x{buf[0]:02X}: the sender "
                        "does not frame messages with MLLP (0x0B ... 0x1C 0x0D)"
                    )
                end = buf.find(END_BLOCK)
                if end != -1:
                    message = bytes(buf[1:end])
                    del buf[: end + len(END_BLOCK)]
                    if len(message) > limit:
                        raise OversizedError(len(message), message[:4096])
                    if START_BLOCK in message:
                        raise FramingError(
                            "a new start byte 0x0B inside a message: the previous frame was "
                            "not ended with 0x1C 0x0D"
                        )
                    return message
                if len(buf) - 1 > limit:
                    raise OversizedError(len(buf) - 1, bytes(buf[1:4097]))
            try:
                chunk = await asyncio.wait_for(reader.read(65536), self.config.idle_timeout_s)
            except TimeoutError:
                if buf:
                    raise FramingError(
                        f"no end of message (0x1C 0x0D) within {self.config.idle_timeout_s:g} s "
                        f"after {len(buf)} bytes"
                    ) from None
                raise
            if not chunk:
                if buf:
                    raise FramingError(f"connection closed mid-message after {len(buf)} bytes")
                return None
            buf += chunk

    async def _send(self, writer: asyncio.StreamWriter, ack: str) -> None:
        writer.write(frame(ack.encode("utf-8")))
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "unknown"
        if not peername or not self.config.allows(str(peername[0])):
            logger.warning(
                "hl7 connection from %s refused: not in RADCHECK_HL7__ALLOWED_PEERS", peer
            )
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        self._connections[task] = False
        logger.info("hl7 connection from %s", peer)
        buf = bytearray()
        count = 0
        try:
            while True:
                message = await self._read_frame(reader, buf)
                if message is None:
                    break
                self._connections[task] = True
                try:
                    result = await asyncio.to_thread(self.receive, message)
                finally:
                    self._connections[task] = False
                if result.header is None:
                    logger.warning(
                        "hl7 %s: a frame of %d bytes is not an HL7 v2 message (%s); "
                        "connection closed, nothing stored",
                        peer,
                        len(message),
                        result.text,
                    )
                    break
                await self._send(writer, result.ack(self.config.application))
                count += 1
                log = logger.info if result.code == AckCode.ACCEPT else logger.warning
                log(
                    "hl7 %s: control_id=%s -> %s (%s)%s",
                    peer,
                    result.header.control_id,
                    result.code.value,
                    result.outcome,
                    "" if result.code == AckCode.ACCEPT else f": {result.text}",
                )
        except FramingError as exc:
            logger.warning("hl7 %s: %s; connection closed, nothing stored", peer, exc)
        except OversizedError as exc:
            logger.warning(
                "hl7 %s: message of at least %d bytes exceeds the limit of %d "
                "(RADCHECK_HL7__MAX_MESSAGE_BYTES); answered AR if it had a header, connection "
                "closed, nothing stored",
                peer,
                exc.size,
                self.config.max_message_bytes,
            )
            with contextlib.suppress(NotHl7Error, ConnectionError):
                header = parse_header(decode_message(exc.head.split(b"\r", 1)[0]))
                await self._send(
                    writer,
                    build_ack(
                        header,
                        AckCode.REJECT,
                        f"The message is larger than {self.config.max_message_bytes} bytes, "
                        "the listener's limit: nothing was stored.",
                        error_code=207,
                        application=self.config.application,
                    ),
                )
        except TimeoutError:
            logger.info(
                "hl7 %s: idle for %g s; connection closed", peer, self.config.idle_timeout_s
            )
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            logger.info("hl7 %s: connection lost (%s)", peer, type(exc).__name__)
        except asyncio.CancelledError:
            logger.info("hl7 %s: closed by shutdown", peer)
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)
            logger.info("hl7 %s: connection ended after %d message(s)", peer, count)
