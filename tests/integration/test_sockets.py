"""Sockets that really close and bursts that really get in, seen from the kernel's side."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol.frames import FrameType
from service import peer
from tests.support.harness import make_config, start_server, stop_server
from tests.support.wire import control, upload_frames

pytestmark = pytest.mark.asyncio

#: /proc/net/tcp states that are not a held connection: LISTEN, TIME_WAIT, CLOSE.
_NOT_HELD = {"0A", "06", "07"}


def held_connections(port: int) -> int:
    """Server-side TCP sockets on ``port`` that are not listening or gone."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] not in _NOT_HELD:
                    count += 1
    return count


@contextlib.contextmanager
def sockets(n: int, port: int, *, rcvbuf: int | None = None) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            opened.append(sock)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        yield opened
    finally:
        for sock in opened:
            sock.close()


async def test_clients_that_never_read_a_download_are_gone_after_the_linger(
    valkey_server: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shorter lingering bounds, same logic: the test takes seconds, not minutes.
    monkeypatch.setattr(peer, "LINGER_IDLE", 1.0)
    monkeypatch.setattr(peer, "LINGER_TOTAL", 2.0)
    running = await start_server(valkey_server.url, make_config(idle_timeout=1.0))
    try:
        wire = await running.client()
        data = bytes(4 * 1024 * 1024)
        wire.writer.write(upload_frames(prefix + "big", data))
        assert (await wire.reply()).ok and (await wire.reply()).ok
        await wire.close()

        get = control(FrameType.GET, {"key": prefix + "big"})
        with sockets(30, running.port, rcvbuf=4096) as clients:
            await asyncio.sleep(0.2)
            for sock in clients:
                sock.send(get)  # and never read a byte
            await asyncio.sleep(0.5)
            assert held_connections(running.port) == 30
            # idle timeout (1 s), then the ERROR may take LINGER_IDLE (1 s) to
            # leave, then 1 s to flush: gone by then, with the clients still open.
            for _ in range(100):
                if held_connections(running.port) == 0:
                    break
                await asyncio.sleep(0.1)
            assert held_connections(running.port) == 0
    finally:
        await stop_server(running)


async def test_a_burst_of_connects_all_complete_while_the_server_is_busy(
    valkey_server: Any,
) -> None:
    running = await start_server(valkey_server.url, make_config(max_connections=1024))
    try:
        # The event loop is blocked in this synchronous stretch: only the
        # kernel's accept queue (the listen backlog) takes the handshakes.
        with sockets(800, running.port) as clients:
            pending = set(clients)
            for _ in range(20):
                _, ready, _ = select.select([], list(pending), [], 0.05)
                pending -= set(ready)
                if not pending:
                    break
            connected = 800 - len(pending)
        assert connected == 800, f"{connected} of 800 connects completed; the backlog is too small"
    finally:
        await stop_server(running)
