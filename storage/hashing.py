"""SHA-1 of chunks, off the event loop when large; new version ids."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def sha1_digest(data: memoryview) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


#: Below this a thread hand-off costs more than the hash itself.
THREAD_HASH_MIN = 256 * 1024


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in a worker thread when ``size`` makes it worth one."""
    if size < THREAD_HASH_MIN:
        return work(*args)
    return await asyncio.to_thread(work, *args)


async def sha1_of(data: memoryview) -> bytes:
    """SHA-1 of a chunk, in a worker thread when large (hashlib releases the GIL)."""
    return await off_loop(len(data), sha1_digest, data)


def new_vid() -> str:
    return secrets.token_hex(16)
