"""Real Valkey faults: killed, slow, dropping our connections. The server stays up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from protocol.frames import FrameType
from storage.embedded import EmbeddedValkey
from tests.support.faultproxy import FaultProxy
from tests.support.harness import (
    CHUNK,
    Running,
    make_config,
    start_server,
    stop_server,
    sync_valkey,
)
from tests.support.ports import free_port
from tests.support.wire import control, frame, upload_frames

pytestmark = [pytest.mark.asyncio, pytest.mark.single_node]


class Restartable:
    """A valkey-server on a fixed TCP port that a test may kill and bring back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.current = EmbeddedValkey(tcp_port=self.port, maxmemory=512 * 1024**2)
        self.current.start()
        self.url = self.current.url

    def kill(self) -> None:
        self.current.kill()

    def restart(self) -> None:
        password = self.current.password
        self.current.stop()
        self.current = EmbeddedValkey(tcp_port=self.port, maxmemory=512 * 1024**2)
        self.current.password = password
        self.current.start()


@pytest.fixture
def restartable() -> Iterator[Restartable]:
    valkey = Restartable()
    yield valkey
    valkey.current.stop()


@pytest_asyncio.fixture
async def faulty(restartable: Restartable) -> AsyncIterator[Running]:
    running = await start_server(restartable.url, make_config(storage_timeout=1.0))
    yield running
    await stop_server(running)


async def test_valkey_killed_during_upload(
    faulty: Running, restartable: Restartable, prefix: str
) -> None:
    client = await faulty.client()
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    assert (await client.reply()).ok
    await client.send(frame(FrameType.DATA, b"a" * 65536) * 4)
    await asyncio.sleep(0.2)
    restartable.kill()
    with contextlib.suppress(ConnectionError):
        await client.send(frame(FrameType.DATA, b"a" * 65536) * 8)
    reply = await client.reply()
    assert reply.code == "unavailable"
    assert reply.body["fatal"] is True
    await client.close()
    restartable.restart()
    again = await faulty.client()
    assert (await again.put(prefix + "k", b"after restart")).ok
    assert (await again.get(prefix + "k")).data == b"after restart"
    await again.close()


async def test_valkey_killed_during_download(
    faulty: Running, restartable: Restartable, prefix: str
) -> None:
    data = random.Random(5).randbytes(200 * CHUNK)
    client = await faulty.client()
    assert (await client.put(prefix + "k", data)).ok
    reader = await faulty.client()
    await reader.send(control(FrameType.GET, {"key": prefix + "k"}))
    assert (await reader.reply()).ok
    got = await reader.frame()
    assert got is not None
    assert got.type is FrameType.DATA
    restartable.kill()
    while (got := await reader.frame()) is not None and got.type is FrameType.DATA:
        pass
    assert got is not None, "the stream must end with a frame, not a silent close"
    assert got.type is FrameType.ERROR, "never END after losing data"
    assert b"unavailable" in got.payload or b"not_found" in got.payload
    # The error ended the stream at a frame boundary: the connection still works.
    restartable.restart()
    assert (await reader.request(FrameType.PING, {"still": "here"})).body == {"still": "here"}
    for c in (client, reader):
        await c.close()


async def test_valkey_down_between_requests(
    faulty: Running, restartable: Restartable, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="valise.storage")
    client = await faulty.client()
    assert (await client.put(prefix + "k", b"v")).ok
    restartable.kill()
    for request in (FrameType.STAT, FrameType.DELETE, FrameType.GET):
        await client.send(control(request, {"key": prefix + "k"}))
        reply = await client.reply()
        assert reply.code == "unavailable", request
        assert reply.body["fatal"] is False
    reply = await client.request(FrameType.LIST, {})
    assert reply.code == "unavailable"
    restartable.restart()
    assert (await client.request(FrameType.STAT, {"key": prefix + "k"})).code == "not_found"
    assert (await client.put(prefix + "k", b"v2")).ok
    await client.close()
    # Four requests failed, but the operator reads one line going down, one coming back.
    lines = [r.getMessage() for r in caplog.records if r.name == "valise.storage"]
    assert lines == [
        "Valkey is unavailable: Valkey is unreachable or too slow",
        "Valkey is available again",
    ]


async def test_slow_valkey_answers_unavailable_without_leaking(
    faulty: Running, restartable: Restartable, prefix: str
) -> None:
    vk: Any = sync_valkey(restartable.url)
    client = await faulty.client()
    assert (await client.put(prefix + "k", b"v")).ok
    sleeper = asyncio.create_task(asyncio.to_thread(vk.execute_command, "DEBUG", "SLEEP", "4"))
    await asyncio.sleep(0.2)
    replies = []
    # Each waits the 1 s storage timeout, well inside the 4 s sleep.
    for _ in range(2):
        replies.append(await client.request(FrameType.STAT, {"key": prefix + "k"}))
    await sleeper
    assert [r.code for r in replies] == ["unavailable"] * 2
    assert all(r.body["fatal"] is False for r in replies)
    # Valkey is back: served again, and the timed-out connections were not kept.
    assert (await client.request(FrameType.STAT, {"key": prefix + "k"})).ok
    clients = vk.client_list()
    assert len(clients) <= faulty.config.valkey_connections + 1
    vk.close()
    await client.close()


async def test_valkey_that_stops_reading_a_chunk_times_out(restartable: Restartable) -> None:
    """A SET of 8 MiB to a Valkey that stopped reading fills the socket: the write times out."""
    running = await start_server(
        restartable.url,
        make_config(storage_timeout=1.0, chunk_size=8 * 1024**2, max_frame=1024**2),
    )
    vk: Any = sync_valkey(restartable.url)
    client = await running.client()
    try:
        await client.send(control(FrameType.PUT, {"key": "k"}))
        vid = (await client.reply()).body["upload_id"]
        sleeper = asyncio.create_task(asyncio.to_thread(vk.execute_command, "DEBUG", "SLEEP", "4"))
        await asyncio.sleep(0.2)
        data = random.Random(3).randbytes(24 * 1024**2)
        with contextlib.suppress(ConnectionError):
            await client.send(frame(FrameType.DATA, data[: 1024**2]) * 24)
        reply = await client.reply()
        await sleeper
        assert reply.code == "unavailable" and reply.body["fatal"] is True
        # Nothing became visible; what reached Valkey is removed or expiring.
        await client.close()
        client = await running.client()
        assert (await client.request(FrameType.STAT, {"key": "k"})).code == "not_found"
        for name in vk.scan_iter(match=f"valise:c:{vid}:*"):
            assert 0 < vk.pttl(name) <= running.config.staging_ttl * 1000
    finally:
        vk.close()
        await client.close()
        await stop_server(running)


async def test_valkey_dropping_connections_mid_upload(
    faulty: Running, restartable: Restartable, prefix: str
) -> None:
    vk: Any = sync_valkey(restartable.url)
    data = random.Random(9).randbytes(300 * CHUNK)
    client = await faulty.client()
    await client.send(upload_frames(prefix + "k", data)[: 100 * CHUNK])
    for _ in range(3):
        await asyncio.sleep(0.05)
        vk.client_kill_filter(_type="normal", skipme=True)
    await client.send(upload_frames(prefix + "k", data)[100 * CHUNK :])
    assert (await client.reply()).ok
    stored = await client.reply()
    # Chunk SETs are idempotent and retried: the upload survives dropped connections.
    assert stored.ok, stored.body
    got = await client.get(prefix + "k")
    assert got.data == data
    assert got.end == hashlib.sha1(data).digest()
    vk.close()
    await client.close()


async def test_small_files_survive_script_flush_and_dropped_connections(
    faulty: Running, restartable: Restartable, prefix: str
) -> None:
    """Small files run Lua scripts on storage/lane.py's path: a SCRIPT FLUSH (as after a
    Valkey restart) and idle connections killed by Valkey are both ridden out."""
    vk: Any = sync_valkey(restartable.url)
    client = await faulty.client()
    assert (await client.put(prefix + "a", b"first")).ok
    vk.script_flush()
    vk.client_kill_filter(_type="normal", skipme=True)
    await asyncio.sleep(0.05)  # the server's idle connections see the close
    assert (await client.put(prefix + "b", b"second")).ok
    assert (await client.get(prefix + "a")).data == b"first"
    vk.client_kill_filter(_type="normal", skipme=True)
    await asyncio.sleep(0.05)
    assert (await client.get(prefix + "b")).data == b"second"
    vk.client_kill_filter(_type="normal", skipme=True)
    await asyncio.sleep(0.05)
    # DELETE is not retried (not idempotent): a closed connection must not be used.
    assert (await client.request(FrameType.DELETE, {"key": prefix + "b"})).ok
    vk.close()
    await client.close()


async def test_valkey_reply_cut_mid_chunk(restartable: Restartable, prefix: str) -> None:
    """A chunk's reply cut mid-value: retried on a fresh connection, and when every
    try is cut, `unavailable` after the bytes before it; the next download is whole."""
    proxy = FaultProxy(("127.0.0.1", restartable.port))
    host, port = await proxy.start()
    url = f"valkey://:{quote(restartable.current.password)}@{host}:{port}/0"
    # One connection: every command of the server goes through the links we cut.
    running = await start_server(url, make_config(valkey_connections=1, storage_timeout=2.0))
    data = random.Random(7).randbytes(6 * CHUNK)
    client = await running.client()
    try:
        assert (await client.put(prefix + "k", data)).ok
        await proxy.release()  # the next command connects afresh, through a faulty link
        # The first link passes the open (chunk 0 with it) and cuts chunk 1's reply;
        # the two retries are cut halfway through it.
        for after in (3 * CHUNK // 2, CHUNK // 2, CHUNK // 2):
            proxy.arm(after, downstream=True)
        cut = await client.get(prefix + "k")
        assert cut.code == "unavailable"
        assert cut.body["fatal"] is False
        assert data.startswith(cut.data) and len(cut.data) < len(data)
        assert [link.struck.is_set() for link in proxy.links[-3:]] == [True] * 3
        assert (await client.get(prefix + "k")).data == data
        # Cut once only: the retry brings the chunk, the download is whole.
        proxy.arm(3 * CHUNK // 2, downstream=True)
        await proxy.release()
        assert (await client.get(prefix + "k")).data == data
        assert proxy.links[-2].struck.is_set()
    finally:
        await client.close()
        await stop_server(running)
        await proxy.close()
