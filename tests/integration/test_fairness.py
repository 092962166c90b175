"""One client's pathological framing costs that client, never the others.

A 1 MiB read can hold 200,000 legal one-byte DATA frames. Handled in one
synchronous run, they stall every other client of the process and the timer
that keeps an upload's staged chunks alive (with ``--staging-ttl 3`` the
upload's own chunks expired under it). Here each DATA frame is made slow on
purpose, so the stall is certain whatever the machine: the upload must still
commit, and another client's PING must still be answered promptly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from typing import Any

import pytest

from protocol import state
from protocol.frames import HEADER, FrameType
from storage import ChunkWriter
from tests.support.harness import Running, make_config, start_server, stop_server
from tests.support.wire import control, frame

pytestmark = pytest.mark.asyncio

#: CPU each DATA frame costs the server on top of its real work, in seconds.
SLOW_FRAME = 20e-6
#: 3 chunks of 64 KiB in one-byte frames: ~200,000 frames, ~4 s of slow CPU.
SIZE = 3 * 64 * 1024


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    head = _read_exactly(sock, HEADER.size)
    kind, length = HEADER.unpack(head)
    return kind, _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            raise ConnectionError("server closed")
        out += got
    return bytes(out)


def _upload(port: int, key: str, data: bytes) -> list[tuple[int, bytes]]:
    """PUT, one DATA frame per byte, END; the two replies."""
    frames = b"".join(frame(FrameType.DATA, data[i : i + 1]) for i in range(len(data)))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(control(FrameType.PUT, {"key": key}) + frames)
        sock.sendall(frame(FrameType.END, hashlib.sha1(data).digest()))
        return [_read_frame(sock), _read_frame(sock)]


def _ping_until(port: int, done: threading.Event) -> list[float]:
    """PING every 20 ms until ``done`` is set; each round trip's seconds."""
    latencies: list[float] = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        while not done.is_set():
            started = time.perf_counter()
            sock.sendall(control(FrameType.PING, {"n": len(latencies)}))
            kind, _ = _read_frame(sock)
            assert kind == FrameType.OK
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    return latencies


@pytest.fixture
def slow_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DATA event costs SLOW_FRAME of busy CPU on the event loop."""
    real = state.ServerConnection.next_event

    def next_event(self: state.ServerConnection) -> Any:
        event = real(self)
        if isinstance(event, state.Data):
            until = time.perf_counter() + SLOW_FRAME
            while time.perf_counter() < until:
                pass
        return event

    monkeypatch.setattr(state.ServerConnection, "next_event", next_event)


@pytest.mark.usefixtures("slow_frames")
async def test_one_byte_frames_neither_lose_the_upload_nor_stall_others(
    valkey_server: Any, prefix: str, vk: Any
) -> None:
    running: Running = await start_server(valkey_server.url, make_config(staging_ttl=3))
    try:
        data = bytes(range(256)) * (SIZE // 256)
        stop = threading.Event()
        pinger = asyncio.create_task(asyncio.to_thread(_ping_until, running.port, stop))
        await asyncio.sleep(0.1)  # the pinger is connected and answered first
        began = time.perf_counter()
        replies = await asyncio.to_thread(_upload, running.port, prefix + "tiny", data)
        upload_seconds = time.perf_counter() - began
        stop.set()
        latencies = await pinger
        # The loop's own lateness was sampled meanwhile (every 0.25 s).
        lag_samples = running.server.metrics.registry.get_sample_value(
            "valise_loop_lag_seconds_count"
        )
    finally:
        await stop_server(running)

    (accepted, _), (stored, body) = replies
    assert accepted == FrameType.OK
    assert stored == FrameType.OK, body  # not `unavailable: ... expired before the commit`
    assert json.loads(body)["sha1"] == hashlib.sha1(data).hexdigest()
    assert json.loads(body)["size"] == SIZE
    assert lag_samples is not None and lag_samples >= 4
    assert len(latencies) >= 20
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"PING p99 {p99 * 1000:.1f} ms over {len(latencies)} pings, upload {upload_seconds:.1f} s"
    )
    # Not a speed target: a loop that did not yield to others while the 1-byte
    # frames poured in would answer a PING only when the upload ended, whatever
    # the machine's speed; one that yields answers within a small part of it.
    assert p99 < upload_seconds / 5, (
        f"PING p99 {p99 * 1000:.0f} ms of a {upload_seconds:.1f} s upload of 1-byte frames"
    )


async def test_an_upload_receiving_bytes_keeps_its_chunks_without_the_keeper(
    valkey_server: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress renews the staged chunks; the keeper timer is only for a silent client."""

    async def keeper_never_runs(self: ChunkWriter) -> None:
        return None  # as if the event loop never got round to it

    monkeypatch.setattr(ChunkWriter, "_keep_alive", keeper_never_runs)
    running: Running = await start_server(valkey_server.url, make_config(staging_ttl=3))
    try:
        client = await running.client()
        chunk = 64 * 1024
        data = bytes(range(256)) * (8 * chunk // 256)
        await client.send(control(FrameType.PUT, {"key": prefix + "slow"}))
        assert (await client.reply()).ok
        for at in range(0, len(data), chunk):  # 8 chunks over ~6 s: twice the staging TTL
            await client.send(frame(FrameType.DATA, data[at : at + chunk]))
            await asyncio.sleep(0.8)
        await client.send(frame(FrameType.END, hashlib.sha1(data).digest()))
        stored = await client.reply()
        assert stored.ok, stored.body  # not `unavailable: ... expired before the commit`
        assert (await client.get(prefix + "slow")).data == data
        await client.close()
    finally:
        await stop_server(running)
