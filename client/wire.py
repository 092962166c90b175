"""Sans-IO codec for the Valise wire protocol, client side (PROTOCOL.md section 1).

Every frame is ``type u8 | length u32 big-endian | payload``. Encoders return
``[header, payload]`` and never join a large payload to its header; the caller
writes both. :class:`FrameDecoder` takes bytes with ``receive_data`` and hands
out whole frames from ``next_frame`` (or :data:`NEED_DATA`); it checks the
length from the 5 header bytes before buffering any payload, so a hostile
length prefix costs nothing.

Nothing here touches a socket; bad peer input raises
:class:`~client.errors.ProtocolError` and nothing else.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ProtocolError

__all__ = [
    "CLIENT_FRAMES",
    "CONTROL_FRAMES",
    "DEFAULT_MAX_DATA_IN",
    "HEADER",
    "MAX_CONTROL",
    "NEED_DATA",
    "PRE_HELLO_MAX_FRAME",
    "SERVER_FRAMES",
    "Bytes",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "NeedData",
    "encode_control",
    "encode_data",
    "encode_end",
    "encode_frame",
    "parse_digest",
]

#: Frame header: type u8, payload length u32, network byte order.
HEADER: Final = struct.Struct("!BI")

#: Control payloads (JSON objects) are at most 64 KiB (section 1).
MAX_CONTROL: Final = 64 * 1024
#: DATA frame limit a client keeps to before HELLO told it ``max_frame``.
PRE_HELLO_MAX_FRAME: Final = 64 * 1024
#: DATA limit for frames *from* a server whose ``max_frame`` is not known yet.
#: The server's default is 1 MiB; this leaves room for a larger setting while
#: still bounding what one header can make us buffer.
DEFAULT_MAX_DATA_IN: Final = 16 * 1024 * 1024
_MAX_U32: Final = 0xFFFFFFFF

Bytes = bytes | bytearray | memoryview


class FrameType(enum.IntEnum):
    """Frame type byte (section 1 table)."""

    #: client -> server: ``{"version": 1, "token"?, "client"?}``
    HELLO = 0x01
    #: client -> server: start an upload ``{"key", "size"?, "ttl"?, "content_type"?}``
    PUT = 0x02
    #: both directions: raw file bytes
    DATA = 0x03
    #: both directions: SHA-1 digest, 20 raw bytes or 40 hex characters
    END = 0x04
    #: client -> server: ``{"key", "offset"?, "length"?}``
    GET = 0x05
    #: client -> server: ``{"key"}``
    STAT = 0x06
    #: client -> server: ``{"key"}``
    DELETE = 0x07
    #: client -> server: ``{"prefix"?, "cursor"?, "limit"?}``
    LIST = 0x08
    #: client -> server: any JSON object, echoed back
    PING = 0x09
    #: client -> server: ``{}``, only inside an upload
    ABORT = 0x0A
    #: server -> client: JSON object
    OK = 0x80
    #: server -> client: ``{"code", "message", "fatal", ...}``
    ERROR = 0x8F


#: Frames whose payload is one JSON object of at most 64 KiB.
CONTROL_FRAMES: Final = frozenset(FrameType) - {FrameType.DATA, FrameType.END}
#: What a server may send.
SERVER_FRAMES: Final = frozenset({FrameType.OK, FrameType.ERROR, FrameType.DATA, FrameType.END})
#: What a client may send.
CLIENT_FRAMES: Final = frozenset(FrameType) - {FrameType.OK, FrameType.ERROR}


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame; the payload is kept as received."""

    type: FrameType
    payload: bytes

    def json(self) -> dict[str, Any]:
        """The control payload as a dict (an empty payload means ``{}``)."""
        if not self.payload:
            return {}
        try:
            value = json.loads(self.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"{self.type.name} payload is not UTF-8 JSON") from exc
        if not isinstance(value, dict):
            raise ProtocolError(f"{self.type.name} payload is not a JSON object")
        return value

    def digest(self) -> bytes:
        """The END payload as 20 raw bytes."""
        return parse_digest(self.payload)


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes for the next frame."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA


def parse_digest(payload: bytes) -> bytes:
    """Read an END payload: 20 raw bytes, or 40 hex digits in either case."""
    if len(payload) == hashlib.sha1().digest_size:
        return bytes(payload)
    if len(payload) == 40:
        try:
            return bytes.fromhex(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError("END payload of 40 bytes is not hex") from exc
    raise ProtocolError(f"END payload must be 20 or 40 bytes, got {len(payload)}")


def _check_length(ftype: FrameType, length: int, max_data: int) -> None:
    if ftype is FrameType.END:
        if length not in (20, 40):
            raise ProtocolError(f"END frame of {length} bytes (must be 20 or 40)")
    elif ftype is FrameType.DATA:
        if length > max_data:
            raise ProtocolError(f"DATA frame of {length} bytes exceeds {max_data}")
    elif length > MAX_CONTROL:
        raise ProtocolError(f"{ftype.name} frame of {length} bytes exceeds {MAX_CONTROL}")


def encode_frame(ftype: FrameType, payload: Bytes) -> list[Bytes]:
    """``[header, payload]`` for any frame; the payload is not copied."""
    length = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    if length > _MAX_U32:
        raise ValueError(f"payload of {length} bytes does not fit a frame")
    if ftype in CONTROL_FRAMES and length > MAX_CONTROL:
        raise ValueError(f"{ftype.name} payload of {length} bytes exceeds {MAX_CONTROL}")
    if ftype is FrameType.END and length not in (20, 40):
        raise ValueError("END payload must be 20 raw bytes or 40 hex characters")
    return [HEADER.pack(ftype, length), payload]


def encode_control(ftype: FrameType, body: Mapping[str, Any] | None = None) -> list[Bytes]:
    """A control frame carrying ``body`` as compact UTF-8 JSON."""
    if ftype not in CONTROL_FRAMES:
        raise ValueError(f"{ftype.name} is not a control frame")
    payload = json.dumps(
        dict(body or {}), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    return encode_frame(ftype, payload)


def encode_data(chunk: Bytes) -> list[Bytes]:
    """A DATA frame; the caller keeps chunks within the peer's ``max_frame``."""
    return encode_frame(FrameType.DATA, chunk)


def encode_end(digest: bytes, *, hex_digest: bool = False) -> list[Bytes]:
    """An END frame for a 20-byte SHA-1 digest, raw or as 40 lowercase hex."""
    if len(digest) != 20:
        raise ValueError("END needs a 20-byte SHA-1 digest")
    return encode_frame(FrameType.END, digest.hex().encode("ascii") if hex_digest else digest)


class FrameDecoder:
    """Incremental decoder: feed bytes, take frames.

    ``allowed`` is the set of frame types the peer may send (server frames by
    default); anything else, an unknown type byte, or a length over the limit
    for its type raises :class:`ProtocolError` as soon as the 5 header bytes
    are in, before any payload is buffered. After an error the decoder stays
    broken: every later call raises again.
    """

    def __init__(
        self,
        *,
        max_data: int = DEFAULT_MAX_DATA_IN,
        allowed: frozenset[FrameType] = SERVER_FRAMES,
    ) -> None:
        self.max_data = max_data
        self._allowed = allowed
        self._buf = bytearray()
        self._header: tuple[FrameType, int] | None = None
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as a frame (header included)."""
        return len(self._buf) + (HEADER.size if self._header is not None else 0)

    def receive_data(self, data: Bytes) -> None:
        """Append bytes from the peer."""
        self._buf += data

    def next_frame(self) -> Frame | NeedData:
        """The next whole frame, or :data:`NEED_DATA`."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> Frame | NeedData:
        if self._header is None:
            if len(self._buf) < HEADER.size:
                return NEED_DATA
            type_byte, length = HEADER.unpack_from(self._buf)
            try:
                ftype = FrameType(type_byte)
            except ValueError:
                raise ProtocolError(f"unknown frame type 0x{type_byte:02x}") from None
            if ftype not in self._allowed:
                raise ProtocolError(f"unexpected {ftype.name} frame from peer")
            _check_length(ftype, length, self.max_data)
            del self._buf[: HEADER.size]
            self._header = (ftype, length)
        ftype, length = self._header
        if len(self._buf) < length:
            return NEED_DATA
        payload = bytes(self._buf[:length])
        del self._buf[:length]
        self._header = None
        return Frame(ftype, payload)
