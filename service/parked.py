"""tus uploads of this process between two requests: one request at a time each.

A tus client sends its file as a series of PATCH requests. The writer that
took the last one stays here, *parked* (its bytes checkpointed to Valkey,
its memory trimmed to the partial last chunk), so the next PATCH goes on
with the running SHA-1 instead of rebuilding it from Valkey (decision 0015).

Every request on an upload (HEAD, PATCH, DELETE) first *takes* it: a
request that holds it and is still reading its body is asked to stop (it
checkpoints what it read, as an interrupted PATCH does) and waited for, so
that a client that lost its connection and asks HEAD gets every byte the
server had read. tusd does the same for a new request on a locked upload.

A parked writer goes back to Valkey alone (``leave``: it stays resumable)
after :data:`IDLE` seconds, or when more than :data:`LIMIT` are parked, or
at shutdown. Valkey already holds all it knows, so that costs the next
PATCH a rebuild, never a byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from protocol.errors import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from service.operations import Operations
    from storage.tus import TusWriter

log = logging.getLogger("valise")

#: (namespace, upload id), as for the binary door's attachments.
Slot = tuple[str, str]

#: Most writers parked at once in one process (each holds at most a chunk).
LIMIT = 16
#: Seconds a parked writer waits for its next request.
IDLE = 30.0


class Entry:
    """One upload's turn-taking, and its writer while it is in this process."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        #: Requests taking or waiting for the upload.
        self.users = 0
        #: The writer, and the Operations that attached it (they release it).
        self.writer: TusWriter | None = None
        self.ops: Operations | None = None
        #: Set by the request that holds the upload while it reads a body:
        #: done when another request wants the upload.
        self.stop: asyncio.Future[None] | None = None

    def keep(self, writer: TusWriter, ops: Operations) -> None:
        self.writer, self.ops = writer, ops

    def clear(self) -> None:
        self.writer = self.ops = None

    def reading(self) -> asyncio.Future[None]:
        """The future a request reading a body watches: done when it must stop
        (at once when another request already waits for the upload)."""
        self.stop = asyncio.get_running_loop().create_future()
        if self.users > 1:
            self.stop.set_result(None)
        return self.stop


class Parked:
    def __init__(self, *, limit: int = LIMIT, idle: float = IDLE) -> None:
        self.limit = limit
        self.idle = idle
        self._entries: dict[Slot, Entry] = {}
        #: Parked slots, least recently parked first, with their idle timers.
        self._parked: OrderedDict[Slot, asyncio.TimerHandle] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._parked)

    @contextlib.asynccontextmanager
    async def take(self, slot: Slot, wait: float) -> AsyncIterator[Entry]:
        """The upload's entry, for this request alone; ``busy`` when the request
        holding it did not let go within ``wait`` seconds."""
        entry = self._entries.setdefault(slot, Entry())
        entry.users += 1
        try:
            if entry.stop is not None and not entry.stop.done():
                entry.stop.set_result(None)
            try:
                async with asyncio.timeout(wait):
                    await entry.lock.acquire()
            except TimeoutError:
                raise ProtocolError(
                    ErrorCode.BUSY, "another request holds this upload", fatal=False
                ) from None
            try:
                self._unpark(slot)
                yield entry
            finally:
                entry.stop = None
                if entry.writer is not None and not entry.writer.done:
                    self._park(slot)
                else:
                    entry.clear()
                entry.lock.release()
        finally:
            entry.users -= 1
            self._forget(slot, entry)

    def _forget(self, slot: Slot, entry: Entry) -> None:
        if entry.users == 0 and entry.writer is None and self._entries.get(slot) is entry:
            del self._entries[slot]

    def _park(self, slot: Slot) -> None:
        loop = asyncio.get_running_loop()
        self._parked[slot] = loop.call_later(self.idle, self._evict_soon, slot)
        while len(self._parked) > self.limit:
            oldest = next(iter(self._parked))
            self._unpark(oldest)
            self._evict_soon(oldest)

    def _unpark(self, slot: Slot) -> None:
        timer = self._parked.pop(slot, None)
        if timer is not None:
            timer.cancel()

    def _evict_soon(self, slot: Slot) -> None:
        self._parked.pop(slot, None)
        task = asyncio.get_running_loop().create_task(self._evict(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _evict(self, slot: Slot) -> None:
        """Send a parked writer back to Valkey, unless a request took it meanwhile."""
        entry = self._entries.get(slot)
        if entry is None or entry.lock.locked() or slot in self._parked:
            return
        async with entry.lock:
            await _leave(entry)
        self._forget(slot, entry)

    async def close(self) -> None:
        """Shutdown: every parked writer goes back to Valkey (it stays resumable)."""
        for timer in self._parked.values():
            timer.cancel()
        self._parked.clear()
        for slot, entry in list(self._entries.items()):
            if not entry.lock.locked():
                async with entry.lock:
                    await _leave(entry)
                self._forget(slot, entry)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _leave(entry: Entry) -> None:
    writer, ops = entry.writer, entry.ops
    entry.clear()
    if writer is not None and ops is not None and not writer.done:
        try:
            await ops.leave(writer, keep=True)
        except Exception:
            log.exception("a parked tus upload could not be left for later")
