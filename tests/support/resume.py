"""Resumable uploads from the client's side, in raw frames (docs/protocol.md section 6.1).

Just enough of a client for the tests: the bytes of an upload, how many file
bytes a prefix of them carries, a RESUME, and the rest of an upload sent from
the server's offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

from protocol.frames import HEADER, HEADER_SIZE, FrameType
from tests.support.wire import Reply, WireClient, control, frame


def upload_stream(key: str, data: bytes, *, frame_size: int = 10_000, **put: Any) -> bytes:
    """PUT {"resumable": true} and the file in DATA frames of ``frame_size``; no END."""
    out = [control(FrameType.PUT, {"key": key, "resumable": True, **put})]
    out += [
        frame(FrameType.DATA, data[i : i + frame_size]) for i in range(0, len(data), frame_size)
    ]
    return b"".join(out)


def file_bytes_within(stream: bytes, n: int) -> int:
    """File bytes among the first ``n`` bytes of ``stream``: every DATA payload byte,
    those of a DATA frame cut off midway included (the server keeps them)."""
    at = total = 0
    while at + HEADER_SIZE <= n:
        kind, length = HEADER.unpack_from(stream, at)
        at += HEADER_SIZE
        if kind == FrameType.DATA:
            total += max(0, min(length, n - at))
        at += length
    return total


def boundaries(stream: bytes) -> list[int]:
    """Where each frame of ``stream`` starts."""
    at, starts = 0, []
    while at < len(stream):
        starts.append(at)
        at += HEADER_SIZE + HEADER.unpack_from(stream, at)[1]
    return starts


async def send_quietly(client: WireClient, data: bytes) -> None:
    """Send what the link lets through; a link cut under us is the point of the test."""
    with contextlib.suppress(ConnectionError, OSError):
        await client.send(data)


async def resume(client: WireClient, upload_id: str) -> Reply:
    return await client.request(FrameType.RESUME, {"upload_id": upload_id})


async def finish(
    client: WireClient, data: bytes, offset: int, *, frame_size: int = 10_000, digest: bytes = b""
) -> Reply:
    """DATA from ``offset`` on and END (the whole file's SHA-1, or ``digest``): the reply."""
    rest = data[offset:]
    frames = [
        frame(FrameType.DATA, rest[i : i + frame_size]) for i in range(0, len(rest), frame_size)
    ]
    frames.append(frame(FrameType.END, digest or hashlib.sha1(data).digest()))
    await send_quietly(client, b"".join(frames))
    return await client.reply()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``check()`` to hold (a synchronisation, never a timing assert)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - another component's state, no event to wait on
            await asyncio.sleep(0.01)
