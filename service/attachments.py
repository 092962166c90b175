"""Resumable uploads attached to connections of this process, and their handover.

The newest connection wins (docs/protocol.md section 6.1). Across servers the
owner token in Valkey decides, and a connection that lost its upload finds
out at its next chunk write. Within one process we can do better: a RESUME
asks the connection holding the upload to stop at once (``superseded``),
waits until it has stored every byte it had read, and only then takes the
upload over, so the new connection's offset counts those bytes too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

#: (namespace, upload id): ids are random, but a foreign namespace's RESUME
#: must never disturb an upload that is not its own.
Slot = tuple[str, str]


class Attachment:
    """One upload held by one connection."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        #: Done when another connection wants the upload: the holder stops reading.
        self.wanted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Set once the holder has stored what it read and let go.
        self.released = asyncio.Event()

    def want(self) -> None:
        if not self.wanted.done():
            self.wanted.set_result(None)


class Attachments:
    def __init__(self) -> None:
        self._held: dict[Slot, Attachment] = {}
        self._locks: dict[Slot, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def handover(self, slot: Slot, wait: float) -> AsyncIterator[None]:
        """One RESUME of ``slot`` at a time: the holder, if any, is asked to let go,
        and waited for (at most ``wait`` seconds) before the body takes the upload."""
        lock, users = self._locks.get(slot, (asyncio.Lock(), 0))
        self._locks[slot] = (lock, users + 1)
        try:
            async with lock:
                holder = self._held.get(slot)
                if holder is not None:
                    holder.want()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await holder.released.wait()
                yield
        finally:
            lock, users = self._locks[slot]
            if users == 1:
                del self._locks[slot]
            else:
                self._locks[slot] = (lock, users - 1)

    def attach(self, slot: Slot) -> Attachment:
        """The calling connection now holds ``slot``."""
        attachment = Attachment(slot)
        previous = self._held.get(slot)
        if previous is not None:
            previous.want()  # a holder that did not let go in time
        self._held[slot] = attachment
        return attachment

    def release(self, attachment: Attachment) -> None:
        attachment.released.set()
        if self._held.get(attachment.slot) is attachment:
            del self._held[attachment.slot]
