"""A chunk's GET reply received straight into its own buffer: one copy, not five.

valkey-py reads a reply through ``StreamReader`` (its buffer, a slice,
``bytes()`` of the slice), libvalkey's ``feed`` and the reply object: each
byte of a chunk copied about five times, 16-18 % of the server's CPU on a
download (``perf``, docs/performance.md). For the one command a download
sends over and over, a GET of a chunk on one node, the connection's
transport is switched to a ``BufferedProtocol`` for the reply: asyncio
receives (``recv_into``) the socket's bytes straight into a buffer of the
chunk's size, read once from the ``$<length>`` header.

Only a bulk string takes this path. Anything else (``$-1``, an error reply,
a RESP3 null) is handed back to the connection's own parser with the bytes
read so far, so valkey-py decides what it is and raises as it always did.
A reply cut short ends the wait with the ``ConnectionError`` valkey-py
raises for a closed connection; the caller closes the connection.

TLS connections keep valkey-py's reader: the socket carries ciphertext.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import valkey.exceptions as valkey_exc

#: Bytes received before the header is known: the header, maybe a little of the value.
HEAD = 64
#: Bytes a read may bring after the reply under uvloop (see _Reply.get_buffer).
SPILL = 64 * 1024
_CRLF = b"\r\n"


class Buffers:
    """One download's chunk buffers, each reused once nothing refers to it any more.

    A buffer handed out lives on in memoryviews of it: the piece being
    sent, a frame of it, a thread hashing it. Reused only when the sole
    references left are this pool's (CPython's reference count says so),
    a buffer never changes under a reader; when none is free a new one is
    made, and kept only up to ``keep`` (the download's chunks in flight).
    Reuse spares the zeroing of a fresh chunk-sized buffer each time.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._kept: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        kept = self._kept
        for at in range(len(kept)):
            if len(kept[at]) == size and _references(kept, at) == _UNUSED:
                return kept[at]
        buffer = bytearray(size)
        if len(self._kept) < self.keep:
            self._kept.append(buffer)
        return buffer


def _references(kept: list[bytearray], at: int) -> int:
    return sys.getrefcount(kept[at])


#: What :func:`_references` says of a buffer only its list holds, measured the
#: same way (an interpreter that counts borrowed references differently agrees).
_UNUSED = _references([bytearray(1)], 0)


class _Reply(asyncio.BufferedProtocol):
    """Receives one bulk-string reply into a buffer sized by its header.

    Stands in for the connection's ``StreamReaderProtocol`` for one reply,
    passing it what it must still see (the connection's loss, write flow).
    """

    def __init__(
        self, original: Any, done: asyncio.Future[bytearray | None], buffers: Buffers | None
    ) -> None:
        self.original = original
        self.done = done
        self.buffers = buffers
        self.head = bytearray(HEAD)
        self.got = 0
        #: The value, once the header has been read; None: not a bulk string.
        self.body: bytearray | None = None
        self.filled = 0
        self.tail = bytearray(2)
        self.tail_got = 0
        #: Bytes read after the reply ended (uvloop reads on before we stand aside).
        self.spill: bytearray | None = None
        self.after = bytearray()

    # -- the reply ------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.done.done():
            # uvloop (libuv) asks for a buffer again before it knows whether more
            # came; an empty one is a fatal error there. What does come belongs
            # to the connection's own reader, handed over with ``leftover``.
            if self.spill is None:
                self.spill = bytearray(SPILL)
            return memoryview(self.spill)
        if self.body is None:
            if self.got == len(self.head):  # not a bulk string, still arriving: keep it all
                self.head.extend(bytes(HEAD))
            return memoryview(self.head)[self.got :]
        if self.filled < len(self.body):
            return memoryview(self.body)[self.filled :]
        return memoryview(self.tail)[self.tail_got :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.done.done():
            if self.spill is not None:
                self.after += self.spill[:nbytes]
            return
        if self.body is None:
            self.got += nbytes
            self._header()
        elif self.filled < len(self.body):
            self.filled += nbytes
        else:
            self.tail_got += nbytes
        self._check_end()

    def _header(self) -> None:
        if self.head[0] != ord("$"):
            self.done.set_result(None)  # an error, a RESP3 null: valkey-py parses it
            return
        end = self.head.find(_CRLF, 0, self.got)
        if end < 0:
            if self.got == len(self.head):
                self._fail(valkey_exc.InvalidResponse("Protocol error: reply header too long"))
            return
        length = _bulk_length(self.head[:end])
        if length is None:
            self.done.set_result(None)  # $-1: valkey-py reads it as None
            return
        self.body = bytearray(length) if self.buffers is None else self.buffers.take(length)
        # What came with the header: the start of the value, maybe its CRLF.
        extra = memoryview(self.head)[end + 2 : self.got]
        self.filled = min(len(extra), length)
        self.body[: self.filled] = extra[: self.filled]
        rest = extra[self.filled :]
        if len(rest) > 2:
            self._fail(valkey_exc.InvalidResponse("Protocol error: bytes after a reply"))
            return
        self.tail[: len(rest)] = rest
        self.tail_got = len(rest)

    def _check_end(self) -> None:
        if self.done.done() or self.body is None or self.tail_got < 2:
            return
        if self.tail != _CRLF:
            self._fail(valkey_exc.InvalidResponse("Protocol error: bulk string not ended"))
            return
        self.done.set_result(self.body)

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    @property
    def leftover(self) -> bytes:
        """The bytes read of a reply that is not a bulk string, and any after it."""
        return bytes(self.head[: self.got]) + self.after

    # -- the connection ---------------------------------------------------

    def eof_received(self) -> bool | None:
        self._fail(valkey_exc.ConnectionError("Connection closed by server."))
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(valkey_exc.ConnectionError("Connection closed by server."))
        self.original.connection_lost(exc)

    def pause_writing(self) -> None:
        self.original.pause_writing()

    def resume_writing(self) -> None:
        self.original.resume_writing()


def _bulk_length(header: bytearray) -> int | None:
    """The length of a ``$<n>`` header; None for any other reply (``$-1`` included)."""
    if not header.startswith(b"$") or not header[1:].isdigit():
        return None
    return int(header[1:])


async def read_bulk(conn: Any, command: tuple[Any, ...], buffers: Buffers | None = None) -> Any:
    """Send ``command`` on ``conn`` and read its reply; a bulk string into its own
    buffer, one of ``buffers`` when given.

    Returns the value as a ``bytearray``, or what valkey-py's parser reads for
    any other reply (None for a missing key, an error reply as an exception
    object, returned, as ``read_response`` does). Raises as valkey-py raises
    on a connection that fails; the caller closes it then.
    """
    transport = conn._writer.transport
    if transport.get_extra_info("ssl_object") is not None:
        await conn.send_packed_command(conn.pack_command(*command), False)
        return await conn._parser.read_response()
    original = transport.get_protocol()
    done: asyncio.Future[bytearray | None] = asyncio.get_running_loop().create_future()
    reply = _Reply(original, done, buffers)
    # Switched before the command goes out: no byte of the reply reaches the StreamReader.
    transport.set_protocol(reply)
    try:
        await conn.send_packed_command(conn.pack_command(*command), False)
        value = await done
    finally:
        transport.set_protocol(original)
    if value is not None:
        if reply.after:  # not ours: the connection's reader sees it (and _ready() then)
            conn._reader.feed_data(bytes(reply.after))
        return value
    conn._reader.feed_data(reply.leftover)
    return await conn._parser.read_response()
