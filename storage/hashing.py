"""Chunk checksums and SHA-1s, off the event loop when large; new version ids.

Every stored chunk has a checksum, recorded at upload and checked before any
of its bytes leave (a download, a RESUME's re-read). Versions and uploads
written now use xxh3-128; those written by an older server name no check in
their info and were given SHA-1s, which are still read
(docs/decisions/0017-chunk-checksums-xxh3.md). The whole file's SHA-1, the
one clients send and check, is another matter: it is always SHA-1.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import xxhash

from storage.errors import Corrupt

T = TypeVar("T")

SHA1 = "sha1"
XXH3 = "xxh3-128"
#: The check new versions and uploads record.
CHECK = XXH3
#: Each check's digest size, as the digest lists keep them end to end.
DIGEST_SIZE = {SHA1: 20, XXH3: 16}


def chunk_digest(data: memoryview | bytes | bytearray, check: str) -> bytes:
    """``data``'s checksum by ``check``; ValueError for a check this server does not know."""
    if check == XXH3:
        return xxhash.xxh3_128_digest(data)
    if check == SHA1:
        return hashlib.sha1(data, usedforsecurity=False).digest()
    raise ValueError(f"unknown chunk check {check!r}")


def digest_size(check: str) -> int:
    """The size of one digest of ``check``: :class:`Corrupt` when this server does
    not know it (a newer one wrote the file or began the upload)."""
    try:
        return DIGEST_SIZE[check]
    except KeyError:
        raise Corrupt(f"the chunks are checked by {check!r}, unknown to this server") from None


#: Below this a thread hand-off costs more than a SHA-1 of the bytes (writers
#: hash each chunk with the whole file's SHA-1, so they use this one too).
THREAD_HASH_MIN = 256 * 1024
#: The same for xxh3, ~20x faster: about what SHA-1 takes at its threshold.
THREAD_XXH3_MIN = 4 * 1024 * 1024


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a worker thread when ``size`` makes it worth one."""
    if size < THREAD_HASH_MIN:
        return work(*args)
    return await asyncio.to_thread(work, *args)


async def chunk_digest_of(data: memoryview | bytes | bytearray, check: str) -> bytes:
    """:func:`chunk_digest`, in a worker thread when large (both release the GIL)."""
    if check == XXH3 and len(data) < THREAD_XXH3_MIN:
        return chunk_digest(data, check)
    return await off_loop(len(data), chunk_digest, data, check)


def new_vid() -> str:
    """A fresh version id: 32 hex digits of the OS's CSPRNG (what
    ``secrets.token_hex(16)`` returns, without its two Python calls on the way)."""
    return os.urandom(16).hex()
