"""Where a download's bytes go: a DATA payload is lent to the stdlib's streams, copied for others.

The client hands io's own streams (and its own temporary file) a view of
its receive buffer, valid only during ``write()``, as io's contract allows.
Any other writable, a subclass of io's included, may keep what it is given,
so it gets bytes of its own: it must never see later frames overwrite
earlier ones.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from client.aio import AsyncClient
from tests.support.harness import CHUNK, Running

pytestmark = pytest.mark.asyncio


class Keeper:
    """A writable that keeps every object it is given (it is not an io stream)."""

    def __init__(self) -> None:
        self.parts: list[object] = []

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)


class RawKeeper(io.RawIOBase):
    """The same, written as an io stream: io's contract says not to keep
    ``data``, but a user's subclass may, and must not be corrupted for it."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[object] = []

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        self.parts.append(data)
        return len(data)  # type: ignore[arg-type]


async def test_every_destination_gets_the_bytes_stored(
    server: Running, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(5 * CHUNK + 7)  # many DATA frames through one receive buffer
    keeper, raw, stream, path = Keeper(), RawKeeper(), io.BytesIO(), tmp_path / "scan.nii"
    async with AsyncClient(server.host, server.port) as client:
        await client.put(prefix + "k", data)
        for dest in (keeper, raw, stream, path):
            info = await client.get(prefix + "k", dest)
            assert info["sha1"] == hashlib.sha1(data).hexdigest()
    for kept in (keeper.parts, raw.parts):
        assert all(type(part) is bytes for part in kept)
        assert b"".join(kept) == data  # type: ignore[arg-type]
    assert stream.getvalue() == data
    assert path.read_bytes() == data
