"""A connection's input under its deadlines: idle, frame (slowloris), upload rate.

Between frames a connection may be silent for ``--idle-timeout``; a frame
that has started must be complete within ``--frame-timeout``; an upload
must keep the ``--min-rate`` floor. A deadline missed ends the connection
with a fatal TIMEOUT (:class:`Closing`).

A read's deadline is kept by one timer per connection (:class:`Watchdog`),
not by an ``asyncio.timeout`` per read: that made, armed and cancelled a
timer for every read, 7.6 % of the server's instructions per small PUT+GET
pair. It is still the only deadline around a read (nested timeouts with
equal deadlines can lose a cancellation on 3.11).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from protocol.errors import ErrorCode, ProtocolError
from service.peer import RateFloor, read_unless
from service.state import READ_SIZE
from service.subscription import Subscription

TIMEOUT = ErrorCode.TIMEOUT
T = TypeVar("T")
#: A timer may run this early: asyncio by its clock's resolution, uvloop by
#: rounding delays to whole milliseconds.
_EARLY = max(time.get_clock_info("monotonic").resolution, 0.001)


def _now() -> float:
    return time.monotonic()


def fatal(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, message, fatal=True)


class Closing(Exception):
    """The connection ends; ``error`` (if any) is the last frame it gets."""

    def __init__(self, error: ProtocolError | None = None) -> None:
        super().__init__(error.message if error else "closed")
        self.error = error


class Watchdog:
    """The deadline of a task's reads, kept by one timer moved lazily.

    A read notes its deadline. The timer is armed anew only when that comes
    before it; when it goes off early (a later read's deadline is further
    away) it is armed again for the read in progress, and between reads it
    lapses. When a deadline passes during a read, the reading task is
    cancelled and the read raises TimeoutError, as under ``asyncio.timeout``:
    a cancel from elsewhere at the same time stays a cancel.
    """

    def __init__(self) -> None:
        # uvloop hands back a plain Handle for a timer due within the millisecond,
        # so when the timer is due is kept here, not asked of it.
        self._timer: asyncio.Handle | None = None
        self._armed = math.inf  # when the timer is due
        self._deadline = math.inf  # of the read in progress
        self._task: asyncio.Task[Any] | None = None  # the task reading, if one is
        self._expired = False

    async def within(self, read: Awaitable[T], seconds: float) -> T:
        """``await read``, or TimeoutError once ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = loop.time() + seconds
        if self._timer is None or self._armed > deadline:
            self._arm(loop, deadline)
        self._deadline = deadline
        self._task = task
        cancelling = task.cancelling()
        try:
            return await read
        except asyncio.CancelledError:
            if self._settle(task) and task.cancelling() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._settle(task)
            self._deadline = math.inf
            self._task = None

    def _settle(self, task: asyncio.Task[Any]) -> bool:
        """Take back the cancel the deadline made, once: True if it made one."""
        if not self._expired:
            return False
        self._expired = False
        task.uncancel()
        return True

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire, loop)
        self._armed = when

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._armed = math.inf
        task = self._task
        if task is None:  # between reads: the next one arms it again
            return
        if self._deadline > loop.time() + _EARLY:  # a later read moved the deadline
            self._arm(loop, self._deadline)
            return
        self._expired = True
        task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._armed = math.inf


class Intake:
    """What a connection reads, and by when (docs/protocol.md section 1)."""

    def __init__(self, reader: asyncio.StreamReader, idle: float, frame: float, rate: RateFloor):
        self.reader = reader
        self.idle = idle
        self.frame = frame
        self.rate = rate
        self.frame_deadline = _now() + frame
        self._watchdog = Watchdog()

    def close(self) -> None:
        """The connection ended: its timer goes too."""
        self._watchdog.close()

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
                # No coroutine of our own around the usual read: one frame less per wakeup.
                read = self.reader.read(READ_SIZE) if wanted is None else self._read(wanted)
                data = await self._watchdog.within(read, max(timeout, 0.0))
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

    async def _read(self, wanted: asyncio.Future[Any]) -> bytes | None:
        if wanted.done():
            return None
        # Bytes that came first are still this upload's; else nothing is lost:
        # they stay in the reader.
        return await read_unless(self.reader.read(READ_SIZE), [wanted])
