"""A TCP proxy that breaks links on purpose: real sockets on 127.0.0.1, asyncio.

Put it between a client and a server, then :meth:`FaultProxy.arm` a fault for
the next connection it accepts: after exactly ``after`` bytes from client to
server it closes both sides (``"close"``: the server reads those bytes, then
EOF), resets both (``"reset"``: RST, so the server may lose bytes it had not
read yet), or stalls (``"stall"``: nothing more flows either way, the sockets
stay open, until :meth:`FaultProxy.release` or :meth:`FaultProxy.close`).
Connections without a fault armed are forwarded untouched. ``downstream=True``
counts the bytes from server to client instead (a download cut mid-file).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Literal

How = Literal["close", "reset", "stall"]

#: SO_LINGER on with a zero timeout: close() sends RST.
_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Fault:
    #: Bytes from client to server that get through.
    after: int
    how: How = "close"
    #: Count the bytes from server to client instead.
    downstream: bool = False


class _Link:
    """One proxied connection: two pumps, and the fault that ends them."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        fault: Fault | None,
    ) -> None:
        self.client = client
        self.server = server
        self.fault = fault
        #: Bytes forwarded from client to server.
        self.forwarded = 0
        #: Bytes forwarded from server to client.
        self.returned = 0
        #: Set when the fault struck.
        self.struck = asyncio.Event()
        self._stalled = asyncio.Event()

    async def run(self) -> None:
        up = asyncio.create_task(self._pump(self.client[0], self.server[1], count=True))
        down = asyncio.create_task(self._pump(self.server[0], self.client[1], count=False))
        try:
            pending: set[asyncio.Task[bool]] = {up, down}
            # Until both directions end cleanly, one fails, or the fault strikes.
            while pending and not self.struck.is_set():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not all(task.result() for task in done):
                    break
            if self._stalled.is_set():
                await asyncio.Event().wait()  # until release() or close() cancels us
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            how = self.fault.how if self.fault and self.struck.is_set() else "close"
            for _, writer in (self.client, self.server):
                _end(writer, reset=how == "reset")

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> bool:
        """Forward until EOF (True: passed on as EOF), an error or the fault (False)."""
        try:
            while True:
                limit = 1 << 16
                if self.fault is not None and self.fault.downstream != count:
                    moved = self.forwarded if count else self.returned
                    limit = min(limit, self.fault.after - moved)
                    if limit == 0:
                        self._strike()
                        return False
                data = await reader.read(limit)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return True
                writer.write(data)
                await writer.drain()
                if count:
                    self.forwarded += len(data)
                else:
                    self.returned += len(data)
        except (ConnectionError, OSError):
            return False

    def _strike(self) -> None:
        assert self.fault is not None
        self.struck.set()
        if self.fault.how == "stall":
            self._stalled.set()


def _end(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(Exception):
        writer.close()


class FaultProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.links: list[_Link] = []
        self._faults: deque[Fault] = deque()
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted = asyncio.Event()

    async def start(self) -> tuple[str, int]:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.address = self._listener.sockets[0].getsockname()[:2]
        return self.address

    def arm(self, after: int, how: How = "close", *, downstream: bool = False) -> None:
        """The next connection accepted breaks after ``after`` bytes toward the server.

        ``downstream``: after ``after`` bytes toward the client.
        """
        self._faults.append(Fault(after, how, downstream))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fault = self._faults.popleft() if self._faults else None
        try:
            server = await asyncio.open_connection(*self.target)
        except OSError:
            _end(writer, reset=True)
            return
        link = _Link((reader, writer), server, fault)
        self.links.append(link)
        self._accepted.set()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await link.run()
        except asyncio.CancelledError:
            pass  # release(): asyncio would log a cancelled connection callback as an error
        finally:
            self._tasks.discard(task)

    async def struck(self, timeout: float = 10.0) -> _Link:
        """The most recent connection, once its fault has struck."""
        async with asyncio.timeout(timeout):
            await self._accepted.wait()
            link = self.links[-1]
            await link.struck.wait()
        return link

    async def release(self) -> None:
        """End every stalled connection (a plain close of both sides)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.release()
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
