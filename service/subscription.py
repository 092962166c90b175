"""One subscribed connection: its undelivered events, and the task that sends them.

docs/protocol.md section 6.3. The namespace's feed (:mod:`service.events`)
offers every event to every local subscriber and never waits for one:
:meth:`Subscription.offer` appends the encoded frame (one bytes object,
shared by all subscribers) to this subscriber's queue, and this
subscriber's own task writes the queue to its socket. A subscriber that
stops reading slows nobody down. Its queue grows, and once the events
waiting pass MAX_PENDING_EVENTS or MAX_PENDING_BYTES, or a write has waited
the idle timeout, it is cut off: ``timeout``, fatal. What one such
subscriber holds of the server's memory is then bounded by the queue's
bounds, one write batch and SEND_BUFFER in the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import HEADER, FrameType
from service.metrics import Metrics
from service.peer import drain, read_unless
from storage import StorageError
from storage.events import Order, Record, event_payload

#: Undelivered events one subscriber may have waiting before it is cut off.
MAX_PENDING_EVENTS = 4096
#: Undelivered bytes (EVENT frames) one subscriber may have waiting.
MAX_PENDING_BYTES = 4 * 1024 * 1024
#: Bytes of EVENT frames handed to the socket at once.
WRITE_BATCH = 256 * 1024
#: The kernel send buffer of a subscribed socket, fixed: left to autotuning,
#: one that stops reading could hold megabytes of the server's memory.
SEND_BUFFER = 256 * 1024


def event_frame(record: Record) -> bytes:
    """The EVENT frame of a stored event, whole."""
    payload = event_payload(record)
    return HEADER.pack(FrameType.EVENT, len(payload)) + payload


class _Stop(Exception):
    """The sender ends: the subscription has failed (see ``failure``)."""


class Subscription:
    """What a SUBSCRIBE set up: the OK's fields, the queue, the sender."""

    def __init__(self, namespace: str, prefix: str, metrics: Metrics) -> None:
        self.namespace = namespace
        self.prefix = prefix.encode()
        self.metrics = metrics
        #: SUBSCRIBE's OK: the latest event before the subscription, and whether
        #: the replay from ``since`` holds every event that followed it.
        self.cursor: str | None = None
        self.complete = True
        #: Live events at or before this one were replayed, or came before.
        self.floor: Order = (0, 0)
        #: The replay from ``since``, sent before any live event.
        self.replay: Callable[[], AsyncIterator[list[Record]]] | None = None
        #: Set once, when the subscription ends the connection: the fatal ERROR
        #: to send, or None to close quietly (the peer is gone).
        self.failure: asyncio.Future[ProtocolError | None] = (
            asyncio.get_running_loop().create_future()
        )
        #: Called once when the subscription ends (the feed forgets it).
        self.on_close: Callable[[Subscription], None] | None = None
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    def ok(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "complete": self.complete}

    # -- the feed's side: never waits ----------------------------------------

    def offer(self, order: Order, key: bytes, frame: bytes) -> None:
        """A live event: queued if it is ours, and cut off if too much waits."""
        if self.failure.done() or order <= self.floor or not key.startswith(self.prefix):
            return
        self._queue.append(frame)
        self._queued += len(frame)
        if len(self._queue) > MAX_PENDING_EVENTS or self._queued > MAX_PENDING_BYTES:
            self.cut_off("events waited undelivered past the server's bound; read faster")
            return
        self._wake.set()

    def cut_off(self, message: str, code: ErrorCode = ErrorCode.TIMEOUT) -> None:
        """End the subscription with a fatal ERROR; its waiting events are dropped."""
        if self.failure.done():
            return
        self.metrics.subscribers_cut_off.inc()
        self._fail(ProtocolError(code, message, fatal=True))

    def _fail(self, error: ProtocolError | None) -> None:
        if not self.failure.done():
            self.failure.set_result(error)
        self._queue.clear()
        self._queued = 0
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()

    # -- the connection's side ------------------------------------------------

    def start(self, writer: asyncio.StreamWriter, idle_timeout: float) -> None:
        """Begin sending (after the OK): the replay, then the live events."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._sender = asyncio.create_task(self._send_all(writer, idle_timeout))

    async def close(self) -> None:
        """The connection ends: stop sending, leave the feed."""
        self._fail(None)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self.on_close is not None:
            on_close, self.on_close = self.on_close, None
            on_close(self)

    async def _send_all(self, writer: asyncio.StreamWriter, idle_timeout: float) -> None:
        try:
            if self.replay is not None:
                async for page in self.replay():
                    frames = [event_frame(r) for r in page if r.key.startswith(self.prefix)]
                    await self._send(writer, frames, idle_timeout)
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch: list[bytes] = []
                size = 0
                while self._queue and size < WRITE_BATCH:
                    frame = self._queue.popleft()
                    batch.append(frame)
                    size += len(frame)
                self._queued -= size
                await self._send(writer, batch, idle_timeout)
        except _Stop:
            pass
        except StorageError as exc:
            # The replay could not be read: the client subscribes again.
            self._fail(ProtocolError(exc.code, exc.message, fatal=True))
        except (ConnectionError, OSError, RuntimeError):
            self._fail(None)  # the peer is gone (RuntimeError: writing to a closed transport)

    async def _send(
        self, writer: asyncio.StreamWriter, frames: list[bytes], patience: float
    ) -> None:
        if not frames:
            return
        writer.write(b"".join(frames) if len(frames) > 1 else frames[0])
        self.metrics.events_delivered.inc(len(frames))
        try:
            await drain(writer, patience)
        except TimeoutError:
            self.cut_off("client stopped reading its events")
            raise _Stop from None

    async def guard(self, reader: asyncio.StreamReader, size: int, limit: float | None) -> bytes:
        """``reader.read(size)``, unless the subscription fails first (its ERROR is
        raised; None: ConnectionResetError) or ``limit`` seconds pass (TimeoutError)."""
        data = await read_unless(reader.read(size), [self.failure], limit)
        if self.failure.done():
            error = self.failure.result()
            if error is None:
                raise ConnectionResetError("subscriber gone")
            raise error
        if data is None:
            raise TimeoutError
        return data
