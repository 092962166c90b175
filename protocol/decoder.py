"""Sans-IO frame decoder (docs/protocol.md section 1).

Feed bytes with :meth:`FrameDecoder.receive_data` (``b""`` means end of input),
then call :meth:`FrameDecoder.next_frame` until it returns :data:`NEED_DATA` or
:data:`CLOSED`. No socket, no asyncio: the caller owns the I/O (h11's shape).

The length is checked from the 5 header bytes, before any payload is buffered,
so a header claiming 4 GiB costs nothing. The buffer never holds more than one
header plus one maximal payload plus whatever one ``receive_data`` call added.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from protocol import compact_json
from protocol.errors import ErrorCode, ProtocolError, bad_frame
from protocol.frames import (
    CLIENT_TYPES,
    CONTROL_TYPES,
    HEADER,
    HEADER_SIZE,
    MAX_CONTROL,
    SERVER_TYPES,
    SHA1_HEX_SIZE,
    SHA1_SIZE,
    Frame,
    FrameType,
)

_unpack_header = HEADER.unpack_from
#: Frame types by their byte.
_TYPES = {int(t): t for t in FrameType}


class Sentinel(enum.Enum):
    #: More bytes are needed before the next frame is complete.
    NEED_DATA = "NEED_DATA"
    #: The peer ended its input on a frame boundary.
    CLOSED = "CLOSED"


NEED_DATA = Sentinel.NEED_DATA
CLOSED = Sentinel.CLOSED


class FrameDecoder:
    """Splits a byte stream into frames of the types ``accept`` allows.

    ``max_data`` bounds DATA payloads (the server's ``max_frame``). Control
    payloads are bounded by 64 KiB and END by the two digest spellings.
    """

    def __init__(
        self,
        *,
        max_data: int,
        accept: frozenset[FrameType] = CLIENT_TYPES,
        check: Callable[[FrameType], None] | None = None,
    ) -> None:
        self._max_data = max_data
        self._accept = accept
        #: Called with each frame's type as soon as its header arrives, so the
        #: caller can refuse a frame the current state forbids before its
        #: payload is buffered.
        self._check = check
        #: Payload limit per type byte this decoder takes, END aside (its two
        #: lengths go the slow way): the usual header is checked with one
        #: lookup, not an enum call (``FrameType(byte)`` was ~4k instructions).
        self._limits = {
            int(t): max_data if t is FrameType.DATA else MAX_CONTROL
            for t in accept
            if t is not FrameType.END
        }
        self._buffer = bytearray()
        self._eof = False
        # Header of the frame whose payload we are waiting for, once validated.
        self._pending: tuple[FrameType, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as frames."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True while part of a frame has arrived (used for the frame deadline)."""
        return self._pending is not None or bool(self._buffer)

    def partial_payload(self, frame_type: FrameType) -> bytes:
        """The payload bytes received so far of a ``frame_type`` frame that is not
        complete (its header arrived, not all of its payload); else ``b""``."""
        if self._pending is None or self._pending[0] is not frame_type:
            return b""
        return bytes(self._buffer[: self._pending[1]])

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise RuntimeError("receive_data after end of input")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_frame(self) -> Frame | Sentinel:
        raw = self.next_raw()
        if isinstance(raw, Sentinel):
            return raw
        return Frame(*raw)

    def next_raw(self) -> tuple[FrameType, bytes] | Sentinel:
        """:meth:`next_frame` as a plain ``(type, payload)`` pair: the server's
        path, which would otherwise build a frozen dataclass per frame only to
        take it apart again (~4k instructions a frame on CPython 3.11)."""
        buffer = self._buffer
        pending = self._pending
        if pending is None:
            if len(buffer) < HEADER_SIZE:
                return self._starved()
            type_byte, length = _unpack_header(buffer)
            if length <= self._limits.get(type_byte, -1):
                frame_type = _TYPES[type_byte]
                if self._check is not None:
                    self._check(frame_type)
            else:
                frame_type = self._check_header(type_byte, length)
            del buffer[:HEADER_SIZE]
        else:
            frame_type, length = pending
        if len(buffer) < length:
            self._pending = (frame_type, length)
            return self._starved()
        self._pending = None
        if length == len(buffer):
            # The frame ends the input: one copy, and nothing to shift.
            payload = bytes(buffer)
            buffer.clear()
            return frame_type, payload
        # One copy out of the buffer (a bytearray slice would copy twice).
        with memoryview(buffer) as view:
            payload = bytes(view[:length])
        del buffer[:length]
        return frame_type, payload

    def _starved(self) -> Sentinel:
        if not self._eof:
            return NEED_DATA
        if self._buffer or self._pending is not None:
            raise bad_frame("connection closed in the middle of a frame")
        return CLOSED

    def _check_header(self, type_byte: int, length: int) -> FrameType:
        try:
            frame_type = FrameType(type_byte)
        except ValueError:
            raise bad_frame(f"unknown frame type 0x{type_byte:02x}") from None
        if frame_type not in self._accept:
            raise bad_frame(f"frame type {frame_type.name} is not allowed in this direction")
        limit = self._max_data if frame_type is FrameType.DATA else MAX_CONTROL
        if frame_type is FrameType.END:
            if length not in (SHA1_SIZE, SHA1_HEX_SIZE):
                raise bad_frame(f"END payload must be 20 or 40 bytes, not {length}")
        elif length > limit:
            raise bad_frame(f"{frame_type.name} payload of {length} bytes exceeds {limit}")
        if self._check is not None:
            self._check(frame_type)
        return frame_type


def server_decoder(max_data: int) -> FrameDecoder:
    """A decoder for what a server sends (clients and tests use it)."""
    return FrameDecoder(max_data=max_data, accept=SERVER_TYPES)


def decode_control(frame: Frame) -> dict[str, Any]:
    """The JSON object of a control frame; an empty payload means ``{}``."""
    return control_object(frame.type, frame.payload)


def control_object(frame_type: FrameType, payload: bytes) -> dict[str, Any]:
    """:func:`decode_control` of a frame given as its type and payload."""
    if frame_type not in CONTROL_TYPES:
        raise bad_frame(f"{frame_type.name} is not a control frame")
    if not payload:
        return {}
    try:
        obj = compact_json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # RecursionError: 64 KiB of "[[[[..." nests deeper than the parser goes.
        raise bad_frame(f"{frame_type.name} payload is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise bad_frame(f"{frame_type.name} payload is not a JSON object")
    return obj


def decode_digest(payload: bytes) -> bytes:
    """END payload to 20 raw bytes: raw, or 40 hex characters in either case."""
    if len(payload) == SHA1_SIZE:
        return payload
    if len(payload) == SHA1_HEX_SIZE:
        try:
            digest = bytes.fromhex(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            digest = b""
        # fromhex skips whitespace, so a spaced spelling decodes short: reject it.
        if len(digest) == SHA1_SIZE:
            return digest
    raise ProtocolError(ErrorCode.BAD_FRAME, "END payload is not a SHA-1 digest", fatal=True)
