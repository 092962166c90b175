"""Slow, stalled and stubborn clients: cut off with a clear ERROR, others unharmed."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from protocol.frames import FrameType
from storage.embedded import EmbeddedValkey
from tests.support.harness import Running, reap, start_process
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio


@pytest.mark.config(min_rate=1024, min_rate_window=1.0, idle_timeout=5.0)
async def test_dripping_upload_is_cut_off(server: Running, prefix: str) -> None:
    client = await server.client()
    await client.send(control(FrameType.PUT, {"key": prefix + "drip"}))
    assert (await client.reply()).ok
    # One byte every 0.3 s: never idle long enough for the idle timeout.
    for _ in range(6):
        await client.send(frame(FrameType.DATA, b"x"))
        await asyncio.sleep(0.3)
    reply = await client.reply()
    assert reply.code == "timeout"
    assert reply.body["fatal"] is True
    assert "rate" in reply.body["message"]
    await client.close()


@pytest.mark.config(frame_timeout=0.5, idle_timeout=5.0)
async def test_frame_must_complete_by_its_deadline(server: Running) -> None:
    client = await server.client()
    payload = b'{"pad": "' + b"x" * 100 + b'"}'
    await client.send(struct.pack("!BI", FrameType.PING, len(payload)) + payload[:10])
    for byte in payload[10:20]:
        await client.send(bytes([byte]))
        await asyncio.sleep(0.1)
    reply = await client.reply()
    assert reply.code == "timeout"
    assert "frame" in reply.body["message"]
    await client.close()


@pytest.mark.config(frame_timeout=0.5, idle_timeout=5.0)
async def test_silence_between_frames_is_the_idle_timeouts_not_the_frames(
    server: Running,
) -> None:
    # The frame deadline starts with a frame; a connection idle between
    # requests (before the first, and after one) has the whole idle timeout.
    client = await server.client()
    await asyncio.sleep(1.5)
    assert (await client.request(FrameType.PING, {"n": 1})).body == {"n": 1}
    await asyncio.sleep(1.5)
    assert (await client.request(FrameType.PING, {"n": 2})).body == {"n": 2}
    await client.close()


@pytest.mark.config(frame_timeout=0.5)
async def test_steady_stream_of_frames_is_not_cut_off(server: Running, prefix: str) -> None:
    # Longer than the frame deadline in total, but every frame completes quickly.
    client = await server.client()
    data = b"s" * 65536
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    assert (await client.reply()).ok
    for _ in range(8):
        await client.send(frame(FrameType.DATA, data[:40000]))
        await asyncio.sleep(0.05)
        await client.send(frame(FrameType.DATA, data[:40000]))
        await asyncio.sleep(0.1)
    await client.send(frame(FrameType.ABORT, b"{}"))
    assert (await client.reply()).body == {"aborted": True}
    await client.close()


def stream_after_rejection(port: int, total: int, delay: float, pause: float) -> tuple[int, bytes]:
    """Blocking client: a PUT the server rejects, a pause, then DATA regardless.

    Returns the bytes it managed to send before any reset, and what it read.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(control(FrameType.PUT, {"key": ""}))
    time.sleep(pause)
    sent = 0
    block = frame(FrameType.DATA, b"\0" * 65531)
    try:
        while sent < total:
            sock.sendall(block)
            sent += len(block)
            if delay:
                time.sleep(delay)
    except (ConnectionResetError, BrokenPipeError):
        pass
    sock.settimeout(5)
    reply = b""
    try:
        while len(reply) < 5 or len(reply) < 5 + struct.unpack("!BI", reply[:5])[1]:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return sent, reply


@pytest.mark.parametrize(
    ("delay", "pause"),
    [(0.0, 0.0), (0.001, 0.0), (0.0, 1.0), (0.0, 5.0)],
    ids=["flat-out", "1ms-between-frames", "1s-pause", "5s-pause"],
)
async def test_client_streaming_after_rejection_reads_the_error(
    server: Running, delay: float, pause: float
) -> None:
    sent, reply = await asyncio.to_thread(
        stream_after_rejection, server.port, 2 * 1024**2, delay, pause
    )
    assert sent >= 2 * 1024**2, "reset before 2 MiB were sent"
    assert reply[:1] == bytes([FrameType.ERROR])
    assert b'"code":"bad_key"' in reply
    assert b'"fatal":true' in reply


@pytest.mark.config(max_connections=2)
async def test_lingering_connections_do_not_count(server: Running) -> None:
    lingering = []
    for _ in range(3):
        client = await server.client()
        await client.send(struct.pack("!BI", 0x42, 0))
        assert (await client.reply()).code == "bad_frame"
        lingering.append(client)  # still open: the server is lingering
    fresh = await server.client()
    assert (await fresh.request(FrameType.PING, {"ok": 1})).body == {"ok": 1}
    for client in [*lingering, fresh]:
        await client.close()


async def test_stalled_headers_do_not_hold_memory_or_block_others(
    server: Running, prefix: str
) -> None:
    stalled: list[WireClient] = []
    for _ in range(50):
        client = await server.client()
        # A DATA-sized header for a PUT that never sends its payload.
        await client.send(struct.pack("!BI", FrameType.PUT, 60000))
        stalled.append(client)
    good = await server.client()
    assert (await good.put(prefix + "k", b"fine")).ok
    assert (await good.get(prefix + "k")).data == b"fine"
    for client in [*stalled, good]:
        await client.close()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_memory_ceiling_under_500_stalled_uploads(
    valkey_server: EmbeddedValkey, prefix: str
) -> None:
    proc, port = start_process(
        valkey_server.url,
        "--frame-timeout",
        "3",
        "--idle-timeout",
        "4",
        "--max-connections",
        "1000",
    )
    try:
        before = rss_mib(proc.pid)
        stalled: list[WireClient] = []
        for i in range(500):
            client = await WireClient.connect("127.0.0.1", port)
            # An upload whose DATA frame announces 1 MiB and delivers 100 bytes.
            await client.send(
                control(FrameType.PUT, {"key": f"{prefix}{i}"})
                + struct.pack("!BI", FrameType.DATA, 1024 * 1024)
                + b"x" * 100
            )
            stalled.append(client)
        for _ in range(100):
            client = await WireClient.connect("127.0.0.1", port)
            await client.send(struct.pack("!BI", FrameType.DATA, 0xFFFFFFFF))
            stalled.append(client)
        await asyncio.sleep(0.5)
        during = rss_mib(proc.pid)
        good = await WireClient.connect("127.0.0.1", port)
        assert (await good.put(prefix + "good", b"served")).ok
        assert (await good.get(prefix + "good")).data == b"served"
        await good.close()
        # 600 hostile connections cost a few MiB, not 500 x 1 MiB or 4 GiB.
        assert during - before < 64, (before, during)
        codes = []
        for i, client in enumerate(stalled):
            if i < 500:
                assert (await client.reply()).ok  # the PUT was accepted
            reply = await client.reply()
            codes.append(reply.code)
            await client.close()
        assert codes.count("timeout") == 500
        assert codes.count("bad_frame") == 100
    finally:
        proc.terminate()
        reap(proc)
