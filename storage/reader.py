"""The async chunk reader: a stored version's bytes, verified chunk by chunk.

A download pins the version (vid) it starts on and reads only that version's
chunks, so it never mixes two versions. Every chunk is checked against the
SHA-1 recorded at upload before any of its bytes are handed out; the next
chunk is fetched while the current one is sent (two chunks in memory at most).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections import deque
from collections.abc import AsyncGenerator
from typing import Any, NoReturn

from storage import keys
from storage.errors import BadRange, Corrupt, FileNotFound
from storage.info import FileInfo
from storage.store import Store, sha1_of

#: Chunks fetched ahead of the one being sent (memory: PREFETCH + 1 chunks).
PREFETCH = 1


class Download:
    """One GET: the range it covers, its bytes as an async iterator, its END digest."""

    def __init__(
        self,
        store: Store,
        namespace: str,
        info: FileInfo,
        offset: int,
        length: int,
        *,
        digests: bytes | None = None,
        head: bytes | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.info = info
        self.offset = offset
        self.length = length
        self.whole = offset == 0 and length == info.size
        self._hasher = None if self.whole else hashlib.sha1(usedforsecurity=False)
        #: Every chunk digest, and chunk 0 when small, when they came with the info.
        self._digests = digests
        self._head = head

    @property
    def sha1(self) -> str:
        """The END digest; for a range, valid once every piece has been read."""
        if self._hasher is None:
            return self.info.sha1
        return self._hasher.hexdigest()

    async def pieces(self) -> AsyncGenerator[memoryview, None]:
        """The range's bytes, one verified slice of a chunk at a time."""
        if self.length == 0:
            return
        size = self.info.chunk_size
        first = self.offset // size
        last = (self.offset + self.length - 1) // size
        digests, head = await self._start(first, last)
        end = self.offset + self.length
        fetches: deque[asyncio.Future[bytes]] = deque()

        def fetch(index: int) -> None:
            at = (index - first) * 20
            fetches.append(asyncio.create_task(self._fetch(index, digests[at : at + 20])))

        if head is None:
            fetch(first)
        else:
            # The first chunk came with the digests; verify it like any other.
            fetches.append(asyncio.ensure_future(self._verify(first, head, digests[:20])))
        ahead = first + 1
        try:
            for index in range(first, last + 1):
                chunk = await fetches.popleft()
                # Keep PREFETCH chunks on their way while this one is sent.
                while ahead <= last and len(fetches) < PREFETCH:
                    fetch(ahead)
                    ahead += 1
                start = max(self.offset - index * size, 0)
                stop = min(end - index * size, len(chunk))
                piece = memoryview(chunk)[start:stop]
                if self._hasher is not None:
                    self._hasher.update(piece)
                yield piece
        finally:
            for task in fetches:
                task.cancel()
            await asyncio.gather(*fetches, return_exceptions=True)

    async def _start(self, first: int, last: int) -> tuple[bytes, bytes | None]:
        """The range's chunk digests and its first chunk (None: fetch it), in one round trip."""
        if self._digests is not None:
            # They came with the info (one node); chunk 0 too when it is small.
            digests = self._digests[first * 20 : (last + 1) * 20]
            if len(digests) != (last - first + 1) * 20:
                await self._lost("chunk checksums")
            return digests, self._head if first == 0 else None
        digests_name = keys.digests_key(self.info.vid)
        chunk_name = keys.chunk_key(self.info.vid, first)

        def queue(pipe: Any) -> None:
            pipe.getrange(digests_name, first * 20, (last + 1) * 20 - 1)
            pipe.get(chunk_name)

        digests, head = await self.store.run(
            functools.partial(self.store.batch, queue), idempotent=True, kind="chunk_read"
        )
        if len(digests) != (last - first + 1) * 20:
            await self._lost("chunk checksums")
        return digests, head

    async def _fetch(self, index: int, digest: bytes) -> bytes:
        name = keys.chunk_key(self.info.vid, index)
        chunk: bytes | None = await self.store.run(
            lambda: self.store.client.get(name), idempotent=True, kind="chunk_read"
        )
        return await self._verify(index, chunk, digest)

    async def _verify(self, index: int, chunk: bytes | None, digest: bytes) -> bytes:
        if chunk is None:
            await self._lost(f"chunk {index}")
        expected = min(self.info.chunk_size, self.info.size - index * self.info.chunk_size)
        if len(chunk) != expected or await sha1_of(memoryview(chunk)) != digest:
            raise Corrupt(f"chunk {index} does not match its recorded checksum")
        return chunk

    async def _lost(self, what: str) -> NoReturn:
        """Missing data: gone with its version (not_found) or damaged (corrupt)."""
        current = await self.store.current_vid(self.namespace, self.info.key)
        if current != self.info.vid:
            raise FileNotFound("the file expired or was deleted while being read")
        raise Corrupt(f"{what} missing from storage")


async def open_download(
    store: Store, namespace: str, key: str, offset: int | None, length: int | None
) -> Download:
    digests = head = None
    if store.config.cluster:
        info = await store.stat(namespace, key)
    else:
        # One node: the info, the digests and a small first chunk in one trip.
        info, digests, head = await store.open(namespace, key)
    start = offset or 0
    if start > info.size:
        raise BadRange(f"offset {start} is beyond the file's {info.size} bytes")
    available = info.size - start
    return Download(
        store,
        namespace,
        info,
        start,
        available if length is None else min(length, available),
        digests=digests,
        head=head,
    )
