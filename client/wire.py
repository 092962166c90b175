"""Sans-IO codec for the Valise wire protocol, client side (docs/protocol.md section 1).

Every frame is ``type u8 | length u32 big-endian | payload``. Encoders return
``[header, payload]`` and never join a large payload to its header; the caller
writes both. :class:`FrameDecoder` takes bytes with ``receive_data`` and hands
out whole frames from ``next_frame`` (or :data:`NEED_DATA`); it checks the
length from the 5 header bytes before buffering any payload, so a hostile
length prefix costs nothing.

Frame types, the header layout and the limits are the server's own: they
come from :mod:`client._protocol`, generated from protocol/ by
``python -m protocol.export``.

Nothing here touches a socket; bad peer input raises
:class:`~client.errors.ProtocolError` and nothing else.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, Union

from ._protocol import (
    HEADER,
    MAX_CONTROL,
    MIN_MAX_FRAME,
    PROTOCOL_VERSION,
    SHA1_HEX_SIZE,
    SHA1_SIZE,
    FrameType,
)
from .errors import ProtocolError

__all__ = [
    "CLIENT_FRAMES",
    "CONTROL_FRAMES",
    "DEFAULT_MAX_DATA_IN",
    "DEFAULT_PORT",
    "HEADER",
    "MAX_CONTROL",
    "NEED_DATA",
    "PRE_HELLO_MAX_FRAME",
    "PROTOCOL_VERSION",
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

#: The server's port when none is given (``valise --server HOST``).
DEFAULT_PORT = 7070

#: DATA frame limit a client keeps to before HELLO told it ``max_frame``.
PRE_HELLO_MAX_FRAME: Final = MIN_MAX_FRAME
#: DATA limit for frames *from* a server whose ``max_frame`` is not known yet.
#: The server's default is 1 MiB; this leaves room for a larger setting while
#: still bounding what one header can make us buffer.
DEFAULT_MAX_DATA_IN: Final = 16 * 1024 * 1024
_MAX_U32: Final = 0xFFFFFFFF
#: An END payload is the raw digest or its hex spelling.
_END_SIZES: Final = (SHA1_SIZE, SHA1_HEX_SIZE)
#: Receive buffer: its first size, and the free space it offers a socket
#: read at least. When a frame does not fit, it grows to hold about
#: ``_BUFFER_SPAN`` frames of that size (but at most ``_MAX_SLACK`` more than
#: needed), so that one read brings the rest of a frame and most of the next:
#: 4 measured best for 1 MiB DATA frames (1, 2 and 8 were slower).
_MIN_BUFFER: Final = 256 * 1024
_MIN_FREE: Final = 64 * 1024
_BUFFER_SPAN: Final = 4
_MAX_SLACK: Final = 8 * 1024 * 1024

Bytes = Union[bytes, bytearray, memoryview]


#: Frames whose payload is one JSON object of at most 64 KiB.
CONTROL_FRAMES: Final = frozenset(FrameType) - {FrameType.DATA, FrameType.END}
#: What a server may send (EVENT only on a subscribed connection).
SERVER_FRAMES: Final = frozenset(
    {FrameType.OK, FrameType.ERROR, FrameType.DATA, FrameType.END, FrameType.EVENT}
)
#: What a client may send.
CLIENT_FRAMES: Final = frozenset(FrameType) - {FrameType.OK, FrameType.ERROR}


class Frame(NamedTuple):
    """One decoded frame; the payload is kept as received. (A NamedTuple, not a
    dataclass: ``dataclasses`` imports ``inspect``, a tenth of ``valise ping``'s
    start-up.)"""

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
    if len(payload) == SHA1_SIZE:
        return bytes(payload)
    if len(payload) == SHA1_HEX_SIZE:
        try:
            return bytes.fromhex(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"END payload of {SHA1_HEX_SIZE} bytes is not hex") from exc
    raise ProtocolError(
        f"END payload must be {SHA1_SIZE} or {SHA1_HEX_SIZE} bytes, got {len(payload)}"
    )


def _check_length(ftype: FrameType, length: int, max_data: int) -> None:
    if ftype is FrameType.END:
        if length not in _END_SIZES:
            raise ProtocolError(
                f"END frame of {length} bytes (must be {SHA1_SIZE} or {SHA1_HEX_SIZE})"
            )
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
    if ftype is FrameType.END and length not in _END_SIZES:
        raise ValueError(
            f"END payload must be {SHA1_SIZE} raw bytes or {SHA1_HEX_SIZE} hex characters"
        )
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
    if len(digest) != SHA1_SIZE:
        raise ValueError(f"END needs a {SHA1_SIZE}-byte SHA-1 digest")
    return encode_frame(FrameType.END, digest.hex().encode("ascii") if hex_digest else digest)


class FrameDecoder:
    """Incremental decoder: feed bytes, take frames.

    ``allowed`` is the set of frame types the peer may send (server frames by
    default); anything else, an unknown type byte, or a length over the limit
    for its type raises :class:`ProtocolError` as soon as the 5 header bytes
    are in, before any payload is buffered. After an error the decoder stays
    broken: every later call raises again.

    Bytes come in either with :meth:`receive_data` (a copy), or straight from
    the socket into the decoder's own buffer: :meth:`get_buffer` hands out its
    free tail, :meth:`buffer_updated` says how much was received there (the
    contract of :class:`asyncio.BufferedProtocol`). Once a frame's header is
    decoded, the buffer makes room for the whole frame, so its payload lands
    in one piece and leaves as one copy. The buffer only grows for a frame
    whose header passed the length check.
    """

    def __init__(
        self,
        *,
        max_data: int = DEFAULT_MAX_DATA_IN,
        allowed: frozenset[FrameType] = SERVER_FRAMES,
    ) -> None:
        self.max_data = max_data
        self._allowed = allowed
        # Bytes [_start, _end) of _buf are received and not yet handed out.
        # _buf is never resized (a view of it may be in the socket's hands):
        # growing replaces it.
        self._buf = bytearray(_MIN_BUFFER)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._header: tuple[FrameType, int] | None = None
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as a frame (header included)."""
        return self._end - self._start + (HEADER.size if self._header is not None else 0)

    @property
    def capacity(self) -> int:
        """Size of the receive buffer (for tests and flow control)."""
        return len(self._buf)

    @property
    def full(self) -> bool:
        """No room left without growing: a reader should stop the socket until it takes frames."""
        return len(self._buf) - (self._end - self._start) < _MIN_FREE

    @property
    def ready(self) -> bool:
        """Whether :meth:`next_frame` may have something other than NEED_DATA to say."""
        available = self._end - self._start
        if self._error is not None:
            return True
        if self._header is None:
            return available >= HEADER.size
        return available >= self._header[1]

    def receive_data(self, data: Bytes) -> None:
        """Append (a copy of) bytes from the peer."""
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        self._make_room(size)
        self._view[self._end : self._end + size] = data
        self._end += size

    def get_buffer(self) -> memoryview:
        """Where the next bytes from the peer go (not empty); then call :meth:`buffer_updated`.

        At least 64 KiB, and all that the frame being received still needs.
        The view is valid until the next call of any method.
        """
        need = _MIN_FREE
        if self._header is not None:
            need = max(need, self._header[1] - (self._end - self._start))
        self._make_room(need)
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written at the start of the view :meth:`get_buffer` returned."""
        if not 0 <= nbytes <= len(self._buf) - self._end:
            raise ValueError(f"buffer_updated({nbytes}) beyond the buffer handed out")
        self._end += nbytes

    def _make_room(self, need: int) -> None:
        """Make at least ``need`` bytes free after ``_end``, keeping the live bytes."""
        live = self._end - self._start
        if live == 0:
            self._start = self._end = 0
        if len(self._buf) - self._end >= need:
            return
        if live + need <= len(self._buf):
            # Move the live bytes to the front (memoryview assignment is memmove).
            self._view[:live] = self._view[self._start : self._end]
        else:
            frame = self._header[1] if self._header is not None else 0
            slack = min(max(len(self._buf), (_BUFFER_SPAN - 1) * frame), _MAX_SLACK)
            buf = bytearray(live + need + slack)
            buf[:live] = self._view[self._start : self._end]
            self._buf, self._view = buf, memoryview(buf)
        self._start, self._end = 0, live

    def next_frame(self) -> Frame | NeedData:
        """The next whole frame, or :data:`NEED_DATA`."""
        frame = self._checked(False)
        assert not isinstance(frame, memoryview)
        return frame

    def next_data(self) -> memoryview | Frame | NeedData:
        """:meth:`next_frame`, except that a DATA frame comes as its bare payload:
        a view of the decoder's buffer, not a copy, valid only until the next
        call of any method. A download hashes and writes each payload at once,
        so every byte it receives is copied once less.
        """
        return self._checked(True)

    def _checked(self, borrow: bool) -> memoryview | Frame | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next(borrow)
        except ProtocolError as exc:
            self._error = exc
            raise

    def _next(self, borrow: bool) -> memoryview | Frame | NeedData:
        if self._header is None:
            if self._end - self._start < HEADER.size:
                return NEED_DATA
            type_byte, length = HEADER.unpack_from(self._buf, self._start)
            try:
                ftype = FrameType(type_byte)
            except ValueError:
                raise ProtocolError(f"unknown frame type 0x{type_byte:02x}") from None
            if ftype not in self._allowed:
                raise ProtocolError(f"unexpected {ftype.name} frame from peer")
            _check_length(ftype, length, self.max_data)
            self._start += HEADER.size
            self._header = (ftype, length)
        ftype, length = self._header
        if self._end - self._start < length:
            return NEED_DATA
        view = self._view[self._start : self._start + length]
        self._start += length
        self._header = None
        if borrow and ftype is FrameType.DATA:
            return view
        payload = bytes(view)
        if ftype is not FrameType.DATA and self._start == self._end:
            self._shrink()
        return Frame(ftype, payload)

    def _shrink(self) -> None:
        """After a transfer (a control frame or END, nothing buffered): back to the first size.

        A connection that downloaded once does not keep a buffer of several
        large frames for the rest of its life.
        """
        if len(self._buf) > _MIN_BUFFER:
            self._buf = bytearray(_MIN_BUFFER)
            self._view = memoryview(self._buf)
        self._start = self._end = 0
