"""One client connection: asyncio streams around the sans-IO :mod:`client.wire` codec.

The connection writes ``[header, payload]`` pairs and drains; it reads by
feeding whatever arrives into a :class:`~client.wire.FrameDecoder`, so a read
cancelled mid-frame loses nothing. Socket-level failures become
:class:`~client.errors.ConnectionFailed`, :class:`~client.errors.ConnectionLost`
or :class:`~client.errors.RequestTimeout`; no ``OSError`` escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_mod
from collections.abc import Mapping
from typing import Any

from . import wire
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    RequestTimeout,
    error_from_wire,
)
from .wire import Frame, FrameType

__all__ = ["Connection"]

_READ_SIZE = 256 * 1024


class Connection:
    """A TCP (or TLS) connection speaking frames. Not safe for concurrent requests."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = wire.FrameDecoder()
        self.timeout = timeout
        #: Largest DATA frame we send: 64 KiB until HELLO announces ``max_frame``.
        self.max_frame_out = wire.PRE_HELLO_MAX_FRAME
        #: The HELLO reply, once HELLO was sent on this connection.
        self.hello_reply: dict[str, Any] | None = None
        self.closed = False

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        io_timeout: float | None,
        ssl: ssl_mod.SSLContext | None = None,
    ) -> Connection:
        """Connect within ``io_timeout``, which then bounds every read and write."""
        try:
            async with asyncio.timeout(io_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=ssl, limit=_READ_SIZE
                )
        except TimeoutError as exc:
            raise ConnectionFailed(f"connecting to {host}:{port} timed out") from exc
        except (OSError, ssl_mod.SSLError) as exc:
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc}") from exc
        return cls(reader, writer, timeout=io_timeout)

    def set_max_frame(self, max_frame: int) -> None:
        """Apply the server's ``max_frame`` from HELLO to both directions."""
        self.max_frame_out = max(wire.PRE_HELLO_MAX_FRAME, max_frame)
        self._decoder.max_data = max(self._decoder.max_data, max_frame)

    # -- writing ---------------------------------------------------------

    async def send(self, parts: list[wire.Bytes]) -> None:
        """Write one encoded frame and wait for the transport to drain."""
        if self.closed:
            raise ConnectionLost("connection is closed")
        try:
            for part in parts:
                self._writer.write(part)
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise RequestTimeout("server stopped reading (write timed out)") from exc
        except (OSError, RuntimeError) as exc:
            # RuntimeError: asyncio refuses writes on a closing transport.
            raise ConnectionLost(f"connection dropped while sending: {exc}") from exc

    async def send_control(self, ftype: FrameType, body: Mapping[str, Any] | None) -> None:
        await self.send(wire.encode_control(ftype, body))

    # -- reading ---------------------------------------------------------

    async def read_frame(self, *, wait_forever: bool = False) -> Frame:
        """The next frame from the server.

        Each read is bounded by the connection's timeout, unless
        ``wait_forever`` (the watcher task that runs during an upload).
        """
        limit = None if wait_forever else self.timeout
        while True:
            frame = self._decoder.next_frame()
            if frame is not wire.NEED_DATA:
                assert isinstance(frame, Frame)
                return frame
            try:
                async with asyncio.timeout(limit):
                    data = await self._reader.read(_READ_SIZE)
            except TimeoutError as exc:
                raise RequestTimeout(f"no reply from the server within {limit} s") from exc
            except (OSError, ssl_mod.SSLError) as exc:
                raise ConnectionLost(f"connection dropped: {exc}") from exc
            if not data:
                partial = self._decoder.buffered
                detail = f" in the middle of a frame ({partial} bytes)" if partial else ""
                raise ConnectionLost(f"server closed the connection{detail}")
            self._decoder.receive_data(data)

    async def read_reply(self) -> dict[str, Any]:
        """Read an OK (returned as a dict) or an ERROR (raised as its exception)."""
        return self.reply_of(await self.read_frame())

    def reply_of(self, frame: Frame) -> dict[str, Any]:
        """The OK body of ``frame``; raises for ERROR or any other frame type."""
        if frame.type is FrameType.OK:
            return frame.json()
        if frame.type is FrameType.ERROR:
            raise error_from_wire(frame.json())
        raise ProtocolError(f"expected OK or ERROR, got {frame.type.name}")

    # -- closing ---------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection now (state unknown, or after a fatal ERROR)."""
        if not self.closed:
            self.closed = True
            self._writer.transport.abort()

    async def aclose(self) -> None:
        """Close politely, waiting briefly for the transport to finish."""
        if self.closed:
            return
        self.closed = True
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
