"""One client connection: an asyncio transport around the sans-IO :mod:`client.wire` codec.

The connection writes ``[header, payload]`` pairs and drains; it reads by
letting the transport receive straight into the
:class:`~client.wire.FrameDecoder`'s buffer (:class:`asyncio.BufferedProtocol`),
so a read cancelled mid-frame loses nothing and a DATA payload is copied once
on its way from the socket to the caller. Socket-level failures become
:class:`~client.errors.ConnectionFailed`, :class:`~client.errors.ConnectionLost`
or :class:`~client.errors.RequestTimeout`; no ``OSError`` escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_mod
from collections.abc import Callable, Mapping
from typing import Any

from . import greeting, tls, wire
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    RequestTimeout,
    ValiseError,
    error_from_wire,
)
from .wire import Frame, FrameType

__all__ = ["Connection"]


class _FrameProtocol(asyncio.BufferedProtocol):
    """Transport callbacks: bytes into the decoder, end of stream, write flow control.

    One reader at a time waits in :meth:`wait_readable`; it is woken when the
    decoder may have a frame, not for every socket read. When nobody waits
    and the decoder's buffer is full, the socket is paused until a reader
    comes back (backpressure, as ``StreamReader`` does).
    """

    def __init__(self, decoder: wire.FrameDecoder) -> None:
        self._decoder = decoder
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.BaseTransport | None = None
        self._over_ssl = False
        self._reader: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._progress_at = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: Bytes received from the peer so far (0: it never said anything).
        self.received = 0
        #: The peer ended its side (or the connection is gone).
        self.eof = False
        #: Why the connection was lost, when it was lost with an error.
        self.error: BaseException | None = None

    # -- transport callbacks -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._over_ssl = transport.get_extra_info("sslcontext") is not None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._decoder.buffer_updated(nbytes)
        self.received += nbytes
        self._progress_at = self._loop.time()
        if self._reader is not None:
            if self._decoder.ready:
                self._wake()
        elif self._decoder.full and not self._reading_paused:
            self._reading_paused = True
            self._pause(True)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep our sending side open after the server's half-close (a fatal
        # ERROR's lingering close), as StreamReaderProtocol does; TLS cannot.
        return not self._over_ssl

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("Connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        for waiter in self._drainers:
            if not waiter.done():
                waiter.set_result(None)

    # -- for Connection ------------------------------------------------------

    async def wait_readable(self, limit: float | None) -> None:
        """Wait until a frame may be ready or the stream ended.

        Raises ``TimeoutError`` after ``limit`` seconds without a single byte
        from the peer (not: without a whole frame).
        """
        if self.eof:
            return
        if self._reading_paused:
            self._reading_paused = False
            self._pause(False)
        waiter = self._loop.create_future()
        self._reader = waiter
        if limit is not None:
            self._progress_at = self._loop.time()
            self._timer = self._loop.call_later(limit, self._check_idle, waiter, limit)
        try:
            await waiter
        finally:
            self._reader = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _check_idle(self, waiter: asyncio.Future[None], limit: float) -> None:
        if waiter.done():
            return
        idle = self._loop.time() - self._progress_at
        if idle >= limit:
            waiter.set_exception(TimeoutError())
        else:
            # Bytes came meanwhile: time the silence from the last of them.
            self._timer = self._loop.call_later(limit - idle, self._check_idle, waiter, limit)

    async def drain(self, limit: float | None) -> None:
        """Wait until the transport takes writes again; ``TimeoutError`` after ``limit`` s.

        A timer on the waiter rather than ``asyncio.wait_for``: no task per
        frame, and the same on every Python from 3.8.
        """
        if self.error is not None:
            raise ConnectionResetError(f"Connection lost: {self.error}")
        if self.closed.done():
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        waiter = self._loop.create_future()
        self._drainers.append(waiter)
        timer = None
        if limit is not None:
            timer = self._loop.call_later(limit, _expire, waiter)
        try:
            await waiter
        finally:
            self._drainers.remove(waiter)
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def _pause(self, pause: bool) -> None:
        transport = self._transport
        if isinstance(transport, asyncio.ReadTransport) and not transport.is_closing():
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection:
    """A TCP (or TLS) connection speaking frames. Not safe for concurrent requests."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: _FrameProtocol,
        decoder: wire.FrameDecoder,
        *,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._decoder = decoder
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
        loop = asyncio.get_running_loop()
        decoder = wire.FrameDecoder()
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _FrameProtocol(decoder), host, port, ssl=ssl),
                io_timeout,
            )
        except asyncio.TimeoutError as exc:  # not the builtin TimeoutError before 3.11
            raise ConnectionFailed(f"connecting to {host}:{port} timed out") from exc
        except (OSError, ssl_mod.SSLError) as exc:
            error = ConnectionFailed(f"cannot connect to {host}:{port}: {exc}")
            tls.hint(error, exc)
            raise error from exc
        return cls(transport, protocol, decoder, timeout=io_timeout)

    @property
    def received_anything(self) -> bool:
        """Whether the server ever sent a byte on this connection."""
        return self._protocol.received > 0

    def set_max_frame(self, max_frame: int) -> None:
        """Apply the server's ``max_frame`` from HELLO to both directions."""
        self.max_frame_out = max(wire.PRE_HELLO_MAX_FRAME, max_frame)
        self._decoder.max_data = max(self._decoder.max_data, max_frame)

    # -- writing ---------------------------------------------------------

    async def send(self, parts: list[wire.Bytes]) -> None:
        """Write one encoded frame and wait for the transport to drain."""
        if self.closed:
            raise ConnectionLost("connection is closed")
        if self._transport.is_closing():
            # A send already failed (asyncio learns it before connection_lost
            # runs): writing on would only make asyncio log a warning per frame.
            raise ConnectionLost("connection dropped while sending")
        try:
            for part in parts:
                self._transport.write(part)
            await self._protocol.drain(self.timeout)
        except TimeoutError as exc:
            raise RequestTimeout("server stopped reading (write timed out)") from exc
        except (OSError, RuntimeError) as exc:
            # RuntimeError: asyncio refuses writes on a closing transport.
            raise ConnectionLost(f"connection dropped while sending: {exc}") from exc

    async def send_control(self, ftype: FrameType, body: Mapping[str, Any] | None) -> None:
        await self.send(wire.encode_control(ftype, body))

    async def greet(self, client_name: str, token: str | None, *, tls: bool) -> dict[str, Any]:
        """HELLO, and the server's reply applied: its ``max_frame`` to both directions,
        the reply kept as :attr:`hello_reply`. A refusal or a silent hang-up gets the
        hint client/greeting.py gives it (the blocking probe gives the same)."""
        try:
            await self.send_control(FrameType.HELLO, greeting.body(client_name, token))
            reply = await self.read_reply()
        except ValiseError as exc:
            heard = self.received_anything
            greeting.explain(exc, token=token is not None, tls=tls, heard=heard)
            raise
        max_frame = reply.get("max_frame")
        if isinstance(max_frame, int) and not isinstance(max_frame, bool):
            self.set_max_frame(max_frame)
        self.hello_reply = reply
        return reply

    # -- reading ---------------------------------------------------------

    async def read_frame(self, *, wait_forever: bool = False) -> Frame:
        """The next frame from the server.

        The server may stay silent for at most the connection's timeout
        (a slow frame is fine while its bytes keep coming), unless
        ``wait_forever`` (the watcher task that runs during an upload).
        """
        frame = await self._read(self._decoder.next_frame, wait_forever)
        assert isinstance(frame, Frame)
        return frame

    async def read_data(self) -> memoryview | Frame:
        """The next frame, a DATA frame as its bare payload: a view valid only
        until the next read (see :meth:`wire.FrameDecoder.next_data`)."""
        return await self._read(self._decoder.next_data, False)

    async def _read(
        self, take: Callable[[], memoryview | Frame | wire.NeedData], wait_forever: bool
    ) -> memoryview | Frame:
        limit = None if wait_forever else self.timeout
        protocol = self._protocol
        while True:
            frame = take()
            if frame is not wire.NEED_DATA:
                assert not isinstance(frame, wire.NeedData)
                return frame
            if protocol.error is not None:
                error = protocol.error
                raise ConnectionLost(f"connection dropped: {error}") from error
            if protocol.eof:
                partial = self._decoder.buffered
                detail = f" in the middle of a frame ({partial} bytes)" if partial else ""
                raise ConnectionLost(f"server closed the connection{detail}")
            try:
                await protocol.wait_readable(limit)
            except TimeoutError as exc:
                raise RequestTimeout(f"no reply from the server within {limit} s") from exc

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
            self._transport.abort()

    async def aclose(self) -> None:
        """Close politely, waiting briefly for the transport to finish."""
        if self.closed:
            return
        self.closed = True
        self._transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), 1.0)
