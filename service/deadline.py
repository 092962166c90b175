"""A connection's input under its deadlines: idle, frame (slowloris), upload rate.

Between frames a connection may be silent for ``--idle-timeout``; a frame
that has started must be complete within ``--frame-timeout``; an upload
must keep the ``--min-rate`` floor. A deadline missed ends the connection
with a fatal TIMEOUT (:class:`Closing`).

One ``asyncio.timeout`` per read, the only deadline around it (nested
timeouts with equal deadlines can lose a cancellation on 3.11). A single
lazily re-armed timer per connection instead was measured and did not win
(docs/performance.md, "Tried, did not win").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from service.peer import RateFloor, read_unless
from service.state import READ_SIZE
from service.subscription import Subscription

TIMEOUT = ErrorCode.TIMEOUT


def _now() -> float:
    return time.monotonic()


def fatal(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, message, fatal=True)


class Closing(Exception):
    """The connection ends; ``error`` (if any) is the last frame it gets."""

    def __init__(self, error: ProtocolError | None = None) -> None:
        super().__init__(error.message if error else "closed")
        self.error = error


class Intake:
    """What a connection reads, and by when (docs/protocol.md section 1)."""

    def __init__(self, reader: asyncio.StreamReader, idle: float, frame: float, rate: RateFloor):
        self.reader = reader
        self.idle = idle
        self.frame = frame
        self.rate = rate
        self.frame_deadline = _now() + frame

    def frame_done(self) -> None:
        """A frame was handled: the next one's deadline starts from now."""
        self.frame_deadline = _now() + self.frame

    async def read(
        self,
        *,
        in_frame: bool,
        uploading: bool,
        wanted: asyncio.Future[Any] | None,
        subscription: Subscription | None,
    ) -> bytes | None:
        """The next bytes; None when ``wanted`` came first (a RESUME on another
        connection wants the upload, section 6.1). A deadline missed raises the
        fatal TIMEOUT the client gets (:class:`Closing`)."""
        now = _now()
        # Slowloris: a frame that has started must be complete by its deadline;
        # between frames only the idle timeout counts.
        timeout = self.idle
        if in_frame:
            timeout = min(timeout, self.frame_deadline - now)
        data: bytes | None
        try:
            if subscription is not None:
                # Subscribed: no silence limit (section 6.3), and the sender may end us.
                limit = max(timeout, 0.0) if in_frame else None
                data = await subscription.guard(self.reader, READ_SIZE, limit)
            else:
                async with asyncio.timeout(max(timeout, 0.0)):
                    data = await self._read(wanted)
        except TimeoutError:
            if in_frame:
                raise Closing(fatal(TIMEOUT, "frame not completed in time")) from None
            raise Closing(fatal(TIMEOUT, "connection idle for too long")) from None
        if data is None:
            return None
        if uploading and not self.rate.add(len(data), _now() - now):
            raise Closing(fatal(TIMEOUT, "upload slower than the server's minimum rate"))
        if not in_frame:  # a frame may start in these bytes: its deadline starts now
            self.frame_deadline = _now() + self.frame
        return data

    async def _read(self, wanted: asyncio.Future[Any] | None) -> bytes | None:
        if wanted is None:
            return await self.reader.read(READ_SIZE)
        if wanted.done():
            return None
        # Bytes that came first are still this upload's; else nothing is lost:
        # they stay in the reader.
        return await read_unless(self.reader.read(READ_SIZE), [wanted])
