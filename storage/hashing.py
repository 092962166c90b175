"""SHA-1 of chunks, off the event loop when large; new version ids."""

from __future__ import annotations

import asyncio
import hashlib
import secrets


def sha1_digest(data: memoryview) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


#: Below this a thread hand-off costs more than the hash itself.
THREAD_HASH_MIN = 256 * 1024


async def sha1_of(data: memoryview) -> bytes:
    """SHA-1 of a chunk, in a worker thread when large (hashlib releases the GIL)."""
    if len(data) < THREAD_HASH_MIN:
        return sha1_digest(data)
    return await asyncio.to_thread(sha1_digest, data)


def new_vid() -> str:
    return secrets.token_hex(16)
