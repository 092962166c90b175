"""Unit tests for client/connection.py: the transport protocol, flow control, timeouts, drops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from client import errors
from client.connection import Connection, _FrameProtocol
from client.wire import Frame, FrameDecoder, FrameType, encode_control, encode_data
from tests.unit.client.frames import RECEIVED, RECEIVED_BYTES, join, pattern


class FakeTransport(asyncio.Transport):
    """What the protocol sees of a socket: writes recorded, reading paused or not."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.closing = False

    @property
    def paused(self) -> bool:
        return not self.reading.is_set()

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def _wired(timeout: float | None = 5.0) -> tuple[Connection, _FrameProtocol, FakeTransport]:
    decoder = FrameDecoder()
    protocol = _FrameProtocol(decoder)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return Connection(transport, protocol, decoder, timeout=timeout), protocol, transport


async def _deliver(
    protocol: _FrameProtocol, transport: FakeTransport, data: bytes, most: int
) -> None:
    """Be the transport: fill get_buffer() views ``most`` bytes a read, never while paused."""
    view = memoryview(data)
    while view:
        await transport.reading.wait()
        buf = protocol.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), len(view), most)
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]
        await asyncio.sleep(0)


async def _read(conn: Connection, count: int) -> list[Frame]:
    return [await conn.read_frame() for _ in range(count)]


@pytest.mark.usefixtures("small_buffers")
@pytest.mark.parametrize("most", [1, 7, 1 << 20])
def test_connection_reads_frames_split_at_every_position(most: int) -> None:
    async def main() -> None:
        for cut in range(len(RECEIVED_BYTES) + 1):
            conn, protocol, transport = _wired()
            reader = asyncio.create_task(_read(conn, len(RECEIVED)))
            for part in (RECEIVED_BYTES[:cut], RECEIVED_BYTES[cut:]):
                # A transport paused for good (or a reader never woken) hangs here.
                await asyncio.wait_for(_deliver(protocol, transport, part, most), 5.0)
            assert await asyncio.wait_for(reader, 5.0) == RECEIVED, f"split at {cut}"

    asyncio.run(main())


@pytest.mark.usefixtures("small_buffers")
def test_reading_pauses_while_nobody_reads_and_resumes_for_a_reader() -> None:
    async def main() -> None:
        conn, protocol, transport = _wired()
        delivery = asyncio.create_task(_deliver(protocol, transport, RECEIVED_BYTES, 1 << 20))
        for _ in range(10):
            await asyncio.sleep(0)
        assert transport.paused
        assert not delivery.done()
        assert await asyncio.wait_for(_read(conn, len(RECEIVED)), 5.0) == RECEIVED
        await asyncio.wait_for(delivery, 5.0)
        assert not transport.paused

    asyncio.run(main())


def test_frames_before_end_of_stream_then_connection_lost() -> None:
    async def main() -> None:
        data = join(encode_control(FrameType.OK, {}) + encode_data(b"abcdef"))
        conn, protocol, transport = _wired()
        await _deliver(protocol, transport, data[:-2], 1 << 20)
        protocol.eof_received()
        assert (await conn.read_frame()).type is FrameType.OK
        with pytest.raises(errors.ConnectionLost, match=r"middle of a frame \(9 bytes\)"):
            await conn.read_frame()

        conn, protocol, transport = _wired()
        reader = asyncio.create_task(conn.read_frame())
        await asyncio.sleep(0)
        protocol.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(errors.ConnectionLost, match="reset by peer"):
            await reader
        with pytest.raises(errors.ConnectionLost):
            await conn.send(encode_data(b"x"))

    asyncio.run(main())


def test_read_timeout_counts_silence_not_slow_frames() -> None:
    async def main() -> None:
        data = join(encode_data(pattern(40, 5)))
        conn, protocol, transport = _wired(timeout=0.5)

        async def trickle() -> None:
            for i in range(len(data)):
                await asyncio.sleep(0.025)
                await _deliver(protocol, transport, data[i : i + 1], 1)

        # The frame takes ~1 s, twice the timeout, but bytes keep coming.
        feeder = asyncio.create_task(trickle())
        assert (await conn.read_frame()).payload == pattern(40, 5)
        await feeder
        conn.timeout = 0.05
        with pytest.raises(errors.RequestTimeout):
            await conn.read_frame()

    asyncio.run(main())


def test_send_waits_for_the_transport_to_drain() -> None:
    async def main() -> None:
        conn, protocol, transport = _wired()
        protocol.pause_writing()
        sender = asyncio.create_task(conn.send(encode_data(b"abc")))
        await asyncio.sleep(0.01)
        assert not sender.done()
        assert transport.written == [b"\x03\x00\x00\x00\x03", b"abc"]
        protocol.resume_writing()
        await asyncio.wait_for(sender, 5.0)

        protocol.pause_writing()
        sender = asyncio.create_task(conn.send(encode_data(b"d")))
        await asyncio.sleep(0.01)
        protocol.connection_lost(None)
        with pytest.raises(errors.ConnectionLost):
            await sender

    asyncio.run(main())
