"""Upload bytes generated from a seed and download bytes only hashed, never kept.

A load test of 64 MiB files on many clients must not hold them: a PUT
streams a :class:`Payload` and a GET streams into a :class:`HashSink`, so
memory stays at about one frame per client and every byte is still checked.
"""

from __future__ import annotations

import hashlib
import random

_BLOCK = 64 * 1024
_TAG = 16
_POOL = 1024 * 1024


def make_pool(seed: int) -> bytes:
    """The random bytes every payload is cut from (one MiB plus a block of slack)."""
    # Random.randbytes (3.9) is exactly this: the same bytes for a seed on any Python.
    size = _POOL + _BLOCK
    return random.Random(seed).getrandbits(size * 8).to_bytes(size, "little")


class Payload:
    """A ``put()`` source: ``size`` bytes determined by (seed, key, version).

    Block ``j`` (64 KiB) is a 16-byte BLAKE2 tag of (seed, key, version, j)
    followed by pool bytes at an offset taken from the tag, so two versions
    never share a block and any read size yields the same bytes. ``digest``
    (SHA-1, hex) is set once the last byte was handed out: a server can only
    store this version after that.
    """

    def __init__(self, pool: bytes, seed: int, key: str, version: int, size: int) -> None:
        self._pool = memoryview(pool)
        self._ident = f"{seed}\0{key}\0{version}\0".encode()
        self.size = size
        self._pos = 0
        self._sha1 = hashlib.sha1()
        self.digest: str | None = None

    def _piece(self, block: int, start: int, stop: int) -> list[bytes | memoryview]:
        tag = hashlib.blake2b(self._ident + block.to_bytes(8, "big"), digest_size=_TAG).digest()
        parts: list[bytes | memoryview] = []
        if start < _TAG:
            parts.append(tag[start : min(stop, _TAG)])
        if stop > _TAG:
            base = int.from_bytes(tag[:4], "big") % _POOL - _TAG
            parts.append(self._pool[base + max(start, _TAG) : base + stop])
        return parts

    def read(self, size: int = -1, /) -> bytes:
        remaining = self.size - self._pos
        n = remaining if size < 0 else min(size, remaining)
        parts: list[bytes | memoryview] = []
        pos, end = self._pos, self._pos + n
        while pos < end:
            block, within = divmod(pos, _BLOCK)
            stop = min(_BLOCK, within + end - pos)
            parts += self._piece(block, within, stop)
            pos += stop - within
        data = b"".join(parts)
        self._sha1.update(data)
        self._pos = end
        if self._pos >= self.size and self.digest is None:
            self.digest = self._sha1.hexdigest()
        return data


class HashSink:
    """A ``get()`` destination that keeps only the SHA-1 and the byte count."""

    def __init__(self) -> None:
        self._sha1 = hashlib.sha1()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._sha1.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._sha1.hexdigest()
