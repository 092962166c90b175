"""storage/bulk.py: a bulk-string reply received into a buffer, and the buffers' reuse."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import valkey.asyncio as valkey_async
import valkey.exceptions as valkey_exc

from storage.bulk import Buffers, _Reply


class _Original:
    """Stands for the StreamReaderProtocol: records what is passed on to it."""

    def __init__(self) -> None:
        self.lost: list[Exception | None] = []

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def _receive(reply: _Reply, data: bytes, step: int) -> None:
    """Hand ``data`` to the protocol as asyncio would, at most ``step`` bytes a time."""
    at = 0
    while at < len(data) and not reply.done.done():
        target = reply.get_buffer(-1)
        n = min(step, len(target), len(data) - at)
        target[:n] = data[at : at + n]
        reply.buffer_updated(n)
        at += n


@pytest.mark.asyncio
@pytest.mark.parametrize("step", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("value", [b"", b"x", b"\r\n$3\r\n", bytes(range(256)) * 300])
async def test_a_bulk_string_arrives_whole_under_any_split(value: bytes, step: int) -> None:
    loop = asyncio.get_running_loop()
    reply = _Reply(_Original(), loop.create_future(), Buffers(2))
    _receive(reply, b"$%d\r\n" % len(value) + value + b"\r\n", step)
    result = reply.done.result()
    assert result is not None and bytes(result) == value


@pytest.mark.asyncio
@pytest.mark.parametrize("step", [1, 64])
@pytest.mark.parametrize(
    "data", [b"$-1\r\n", b"-WRONGTYPE Operation against a key holding the wrong kind\r\n", b"_\r\n"]
)
async def test_other_replies_are_left_to_valkey_py_with_the_bytes_read(
    data: bytes, step: int
) -> None:
    loop = asyncio.get_running_loop()
    reply = _Reply(_Original(), loop.create_future(), None)
    _receive(reply, data, step)
    assert reply.done.result() is None
    assert data.startswith(reply.leftover) and reply.leftover


@pytest.mark.asyncio
async def test_a_reply_cut_mid_value_fails_as_a_closed_connection() -> None:
    loop = asyncio.get_running_loop()
    original = _Original()
    reply = _Reply(original, loop.create_future(), None)
    _receive(reply, b"$10\r\nabcd", 64)
    reply.eof_received()
    reply.connection_lost(None)
    with pytest.raises(valkey_exc.ConnectionError):
        reply.done.result()
    assert original.lost == [None]  # the connection's own protocol learns it too


@pytest.mark.asyncio
async def test_a_value_not_ended_by_crlf_is_a_protocol_error() -> None:
    loop = asyncio.get_running_loop()
    reply = _Reply(_Original(), loop.create_future(), None)
    _receive(reply, b"$3\r\nabcXY", 1)
    with pytest.raises(valkey_exc.InvalidResponse):
        reply.done.result()


def test_a_buffer_is_reused_only_when_nothing_refers_to_it() -> None:
    buffers = Buffers(2)
    first = buffers.take(8)
    view: Any = memoryview(first)[2:4]
    del first
    second = buffers.take(8)
    assert second is not view.obj  # the piece still being sent keeps its buffer
    del view
    assert buffers.take(8) is not second  # `second` is still held here
    del second
    kept = [id(buffer) for buffer in buffers._kept]  # ids: no reference held
    assert id(buffers.take(8)) in kept  # free again: reused, not made anew


def test_buffers_kept_are_bounded() -> None:
    buffers = Buffers(2)
    held = [buffers.take(8) for _ in range(5)]
    assert len({id(b) for b in held}) == 5  # none free: new ones
    assert len(buffers._kept) == 2
    del held
    assert len(buffers._kept) == 2


def test_the_valkey_py_internals_read_bulk_relies_on() -> None:
    # The transport is reached through the connection's StreamWriter; a reply that
    # is not a bulk string is handed back through its StreamReader to its parser.
    pool: Any = valkey_async.BlockingConnectionPool(max_connections=1)
    connection = pool.get_available_connection()
    for name in ("_writer", "_reader", "_parser"):
        assert hasattr(connection, name), name
    assert hasattr(asyncio.StreamReader, "feed_data")


def _receive_all(reply: _Reply, data: bytes, step: int) -> None:
    """Hand over all of ``data`` as uvloop (libuv) does: it asks for a buffer and
    reads again until the socket is empty, whether or not the reply has ended."""
    at = 0
    while at < len(data):
        target = reply.get_buffer(-1)
        assert len(target) > 0  # an empty buffer is a fatal error under uvloop
        n = min(step, len(target), len(data) - at)
        target[:n] = data[at : at + n]
        reply.buffer_updated(n)
        at += n
    assert len(reply.get_buffer(-1)) > 0  # and once more, finding nothing


@pytest.mark.asyncio
@pytest.mark.parametrize("step", [1, 7, 1 << 20])
async def test_reads_past_the_end_of_a_reply_are_kept_for_the_connection(step: int) -> None:
    loop = asyncio.get_running_loop()
    value = bytes(range(256)) * 40
    bulk = _Reply(_Original(), loop.create_future(), None)
    _receive_all(bulk, b"$%d\r\n" % len(value) + value + b"\r\n" + b"+NEXT\r\n", step)
    result = bulk.done.result()
    assert result is not None and bytes(result) == value
    assert bulk.after == b"+NEXT\r\n"
    error = b"-WRONGTYPE Operation against a key holding the wrong kind\r\n"
    other = _Reply(_Original(), loop.create_future(), None)
    _receive_all(other, error, step)
    assert other.done.result() is None
    assert other.leftover == error  # valkey-py's parser reads all of it
