"""Links broken for real (tests/support/faultproxy.py), uploads resumed to the last byte.

Every upload crosses several chunks (64 KiB in the tests) and is cut at chunk
boundaries, inside chunks, inside a frame header, just before END, five times
in a row; each finishes bit for bit with the expected SHA-1, checked with
STAT and GET (docs/protocol.md section 6.1).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from protocol.frames import HEADER_SIZE, FrameType
from tests.support.faultproxy import FaultProxy, How
from tests.support.harness import CHUNK, Running
from tests.support.resume import (
    boundaries,
    file_bytes_within,
    finish,
    resume,
    send_quietly,
    until,
    upload_stream,
)
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio

#: Four chunks and a bit, in DATA frames that do not line up with chunks.
SIZE = 4 * CHUNK + 777
FRAME = 10_000


@pytest_asyncio.fixture
async def proxy(server: Running) -> AsyncIterator[FaultProxy]:
    faulty = FaultProxy((server.host, server.port))
    await faulty.start()
    yield faulty
    await faulty.close()


async def through(proxy: FaultProxy) -> WireClient:
    return await WireClient.connect(*proxy.address)


def body(data: bytes, offset: int) -> bytes:
    """The DATA frames of ``data`` from ``offset`` on."""
    rest = data[offset:]
    return b"".join(frame(FrameType.DATA, rest[i : i + FRAME]) for i in range(0, len(rest), FRAME))


def at_file_byte(stream: bytes, n: int) -> int:
    """The stream position right after its ``n``-th file byte (inside a DATA payload)."""
    for start in boundaries(stream):
        before = file_bytes_within(stream, start + HEADER_SIZE)
        length = int.from_bytes(stream[start + 1 : start + HEADER_SIZE], "big")
        if stream[start] == FrameType.DATA and before + length >= n:
            return start + HEADER_SIZE + (n - before)
    raise ValueError(f"the stream holds fewer than {n} file bytes")


async def gone(server: Running) -> None:
    """The server has seen the broken connection end (and kept its bytes)."""
    await until(lambda: not server.server.connections)


async def stored(client: WireClient, key: str, data: bytes) -> None:
    info = await client.request(FrameType.STAT, {"key": key})
    assert (info.body["size"], info.body["sha1"]) == (len(data), hashlib.sha1(data).hexdigest())
    got = await client.get(key)
    assert got.data == data
    assert got.end == hashlib.sha1(data).digest()


async def start(proxy: FaultProxy, key: str, data: bytes, cut: int, how: How = "close") -> str:
    """PUT resumable through a link that breaks after ``cut`` bytes: the upload id."""
    stream = upload_stream(key, data, frame_size=FRAME)
    put_size = boundaries(stream)[1] if len(stream) > len(boundaries(stream)) else len(stream)
    proxy.arm(cut, how)
    client = await through(proxy)
    await client.send(stream[:put_size])
    first = await client.reply()
    assert first.ok, first.body
    await send_quietly(client, stream[put_size:])
    await proxy.struck()
    await client.close()
    return str(first.body["upload_id"])


def cuts() -> dict[str, int]:
    """Where to cut the stream of one upload, by name."""
    stream = upload_stream("k", bytes(SIZE), frame_size=FRAME)
    frames = boundaries(stream)
    return {
        "chunk-boundary": at_file_byte(stream, 2 * CHUNK),
        "inside-a-chunk": at_file_byte(stream, 2 * CHUNK + 1234),
        "inside-a-header": frames[5] + 2,
        "inside-a-payload": frames[5] + HEADER_SIZE + 100,
        "last-byte-before-end": len(stream) - 1,
        "all-but-end": len(stream),
    }


CUTS = cuts()


@pytest.mark.parametrize(("name", "cut"), CUTS.items(), ids=list(CUTS))
async def test_a_cut_link_resumes_from_every_byte_the_server_read(
    server: Running, proxy: FaultProxy, prefix: str, name: str, cut: int
) -> None:
    data = os.urandom(SIZE)
    key = prefix + name
    upload_id = await start(proxy, key, data, cut)
    await gone(server)
    client = await through(proxy)
    resumed = await resume(client, upload_id)
    assert resumed.ok, resumed.body
    stream = upload_stream(key, data, frame_size=FRAME)
    assert resumed.body["offset"] == file_bytes_within(stream, cut)
    done = await finish(client, data, resumed.body["offset"], frame_size=FRAME)
    assert done.ok, done.body
    await stored(client, key, data)
    await client.close()


async def test_five_cuts_in_one_upload(server: Running, proxy: FaultProxy, prefix: str) -> None:
    data = os.urandom(SIZE)
    key = prefix + "five"
    upload_id = await start(proxy, key, data, 5000)
    offsets: list[int] = []
    # Each connection: RESUME, then the DATA from its offset, cut again somewhere else.
    for where in ("payload", "header", "boundary", "payload", "header"):
        await gone(server)
        offset = offsets[-1] if offsets else file_bytes_within(upload_stream(key, data), 5000)
        rest = body(data, offset)
        starts = boundaries(rest)
        cut = {
            "payload": starts[1] + HEADER_SIZE + 777,
            "header": starts[2] + 3,
            "boundary": starts[1],
        }[where]
        request = control(FrameType.RESUME, {"upload_id": upload_id})
        proxy.arm(len(request) + cut)
        client = await through(proxy)
        resumed = await resume(client, upload_id)
        assert resumed.body["offset"] == offset
        await send_quietly(client, rest)
        await proxy.struck()
        await client.close()
        offsets.append(offset + file_bytes_within(rest, cut))
    await gone(server)
    client = await through(proxy)
    resumed = await resume(client, upload_id)
    assert resumed.body["offset"] == offsets[-1]
    assert offsets == sorted(offsets) and offsets[-1] < SIZE
    done = await finish(client, data, offsets[-1], frame_size=FRAME)
    assert done.ok, done.body
    await stored(client, key, data)
    await client.close()


@pytest.mark.parametrize("cut_at", [2 * CHUNK + 50, 3 * CHUNK])
async def test_a_reset_link_resumes_from_what_the_server_got(
    server: Running, proxy: FaultProxy, prefix: str, cut_at: int
) -> None:
    data = os.urandom(SIZE)
    stream = upload_stream(prefix + "r", data, frame_size=FRAME)
    cut = at_file_byte(stream, cut_at)
    upload_id = await start(proxy, prefix + "r", data, cut, "reset")
    await gone(server)
    client = await through(proxy)
    resumed = await resume(client, upload_id)
    # A reset may drop bytes the server had not read yet; never more than were sent.
    assert 0 <= resumed.body["offset"] <= cut_at
    done = await finish(client, data, resumed.body["offset"], frame_size=FRAME)
    assert done.ok, done.body
    await stored(client, prefix + "r", data)
    await client.close()


def holding(server: Running, nbytes: int) -> bool:
    """The stalled connection has read ``nbytes`` file bytes (whole frames or not)."""
    connections: list[Any] = list(server.server.connections.values())
    return any(
        c.upload is not None and c.upload.size + len(c.proto.unfinished_data()) == nbytes
        for c in connections
    )


@pytest.mark.parametrize("inside_a_frame", [False, True], ids=["frame-boundary", "mid-frame"])
async def test_a_stalled_link_is_superseded_and_its_bytes_kept(
    server: Running, proxy: FaultProxy, prefix: str, inside_a_frame: bool
) -> None:
    data = os.urandom(SIZE)
    key = prefix + "stall"
    stream = upload_stream(key, data, frame_size=FRAME)
    cut = boundaries(stream)[9] + (HEADER_SIZE + 321 if inside_a_frame else 0)
    expected = file_bytes_within(stream, cut)
    upload_id = await start(proxy, key, data, cut, "stall")
    # The old connection is still open, its client silent; wait until the server read it all.
    await until(lambda: holding(server, expected))
    client = await server.client()
    resumed = await resume(client, upload_id)
    assert resumed.body["offset"] == expected  # nothing it had read is lost
    done = await finish(client, data, expected, frame_size=FRAME)
    assert done.ok, done.body
    await stored(client, key, data)
    await client.close()
    await gone(server)  # the stalled one was ended at once, not by its idle timeout
