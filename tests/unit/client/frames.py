"""Frames and bytes shared by the client unit tests (not a test module)."""

from __future__ import annotations

import hashlib
from typing import Any

from client.wire import Frame, FrameType, encode_frame

SHA_EMPTY = hashlib.sha1(b"").digest()


def join(parts: list[Any]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def pattern(size: int, seed: int) -> bytes:
    """Bytes that differ at every offset, so a misplaced copy cannot go unnoticed."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha1(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return out[:size]


RECEIVED = [
    Frame(FrameType.OK, b'{"length":387}'),
    Frame(FrameType.DATA, pattern(100, 1)),
    Frame(FrameType.DATA, b""),
    Frame(FrameType.DATA, pattern(37, 2)),
    Frame(FrameType.END, hashlib.sha1(b"x").digest()),
    Frame(FrameType.DATA, pattern(250, 3)),
    Frame(FrameType.ERROR, b'{"code":"corrupt"}'),
]
RECEIVED_BYTES = b"".join(join(encode_frame(f.type, f.payload)) for f in RECEIVED)
