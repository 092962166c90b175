"""What every door does about a peer that is slow, still talking, or gone.

Both doors (the binary connection and HTTP) hold a client to the same floor
(:class:`RateFloor`), end an error the same way (:func:`linger`: the last
bytes, a half-close, the client's remaining input read and dropped for a
bounded while; :func:`linger_bounded` caps how many linger at once), close
the same way (:func:`closed_within`) and drop a peer that stopped reading
the same way (:func:`reset`). One copy, so the doors cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.state import Served, ServerState

#: Bytes asked of the socket per read.
READ_SIZE = 1024 * 1024
#: Lingering close (docs/protocol.md section 2, PUT): after a fatal ERROR, read and
#: discard what the client still sends, within these bounds, so a client
#: still streaming reads the ERROR instead of a reset.
LINGER_BYTES = 32 * 1024 * 1024
LINGER_IDLE = 6.0
LINGER_TOTAL = 10.0

#: SO_LINGER on with a zero timeout: close() sends RST and frees the buffers.
_LINGER_OFF = struct.pack("ii", 1, 0)


class RateFloor:
    """Minimum average rate of an upload, over windows of time spent waiting on the client.

    Only time spent waiting for the client's bytes counts, so a slow Valkey
    (we stop reading while a chunk is written) never trips it. Like Apache's
    mod_reqtimeout MinRate and Kestrel's MinRequestBodyDataRate.
    """

    def __init__(self, min_rate: int, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self._bytes = 0
        self._waited = 0.0

    def add(self, received: int, waited: float) -> bool:
        """Count a read; False when a full window averaged under the floor."""
        self._bytes += received
        self._waited += waited
        if self._waited < self.window:
            return True
        ok = self._bytes >= self.min_rate * self._waited
        self._bytes, self._waited = 0, 0.0
        return ok


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last: bytes) -> None:
    """Send ``last``, half-close, drain the client's input for a bounded while.

    A client still streaming its upload then reads our error instead of a
    reset (docs/protocol.md section 2, PUT). It ends at the client's EOF,
    after LINGER_BYTES, after LINGER_IDLE seconds without input (a client may
    pause before it streams on), or LINGER_TOTAL seconds in all.
    """
    with contextlib.suppress(TimeoutError, ConnectionError, OSError, RuntimeError):
        async with asyncio.timeout(LINGER_TOTAL):
            writer.write(last)
            # A client that reads nothing of it for LINGER_IDLE never will.
            async with asyncio.timeout(LINGER_IDLE):
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            discarded = 0
            while discarded < LINGER_BYTES:
                async with asyncio.timeout(LINGER_IDLE):
                    data = await reader.read(READ_SIZE)
                if not data:
                    break
                discarded += len(data)


async def linger_bounded(
    state: ServerState,
    who: Served,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    last: bytes,
) -> None:
    """:func:`linger` for a connection that no longer counts against
    --max-connections; lingering ones are bounded too: past as many again,
    ``last`` goes out without the linger."""
    state.forget(who)
    if state.lingering >= state.config.max_connections:
        writer.write(last)
        return
    state.lingering += 1
    try:
        await linger(reader, writer, last)
    finally:
        state.lingering -= 1


async def closed_within(writer: asyncio.StreamWriter, flush: float) -> None:
    """Wait up to ``flush`` seconds for our last bytes to leave a closed connection;
    past that, reset it (a client that stopped reading holds no buffers)."""
    # A second cancel from shutdown may land here; the socket is closed either way.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        async with asyncio.timeout(flush):
            await writer.wait_closed()
            return
    reset(writer)


def reset(writer: asyncio.StreamWriter) -> None:
    """End a connection whose peer stopped reading: RST, buffers dropped at once.

    close() waits for our buffer to drain, for ever if the peer never
    reads; a plain abort() still leaves the kernel holding the unsent
    bytes in FIN_WAIT1 for minutes. SO_LINGER 0 makes the close a reset.
    """
    # A TLS transport whose connection is already gone raises AttributeError
    # from get_extra_info itself (CPython's sslproto): nothing left to reset.
    with contextlib.suppress(OSError, AttributeError):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
    writer.transport.abort()


async def read_unless(
    read: Awaitable[bytes],
    stops: Iterable[asyncio.Future[Any]],
    limit: float | None = None,
) -> bytes | None:
    """What ``read`` returns, unless one of ``stops`` finishes first or ``limit``
    seconds pass: then None, and the read is cancelled (a StreamReader keeps
    the bytes it had, for the next read). Bytes that arrived with a stop win.
    """
    task = asyncio.ensure_future(read)
    try:
        await asyncio.wait({task, *stops}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def drain(writer: asyncio.StreamWriter, patience: float) -> None:
    """Wait for the client to take what we wrote; TimeoutError when it stops reading
    for ``patience`` seconds.

    Nothing to wait for (all of it in the kernel already) costs no timer.
    """
    transport = writer.transport
    if transport.get_write_buffer_size() == 0 and not transport.is_closing():
        return
    async with asyncio.timeout(patience):
        await writer.drain()


def certificate_name(writer: asyncio.StreamWriter) -> str | None:
    """The common name of the client's verified certificate (mutual TLS), if any."""
    cert = writer.get_extra_info("peercert")
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None
