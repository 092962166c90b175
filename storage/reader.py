"""The async chunk reader: a stored version's bytes, verified chunk by chunk.

A download pins the version (vid) it starts on and reads only that version's
chunks, so it never mixes two versions. Every chunk is checked against the
checksum recorded at upload before any of its bytes are handed out.

A download is a three-stage pipeline: one GET in flight, the chunk before it
being verified (in a worker thread when large), the one before that being sent. Memory is
three chunks in flight, whatever the file size; on one node their buffers are
reused (storage/bulk.py), and one more is kept while the download runs.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncGenerator
from typing import Any, NoReturn

from storage import keys
from storage.bulk import Buffers
from storage.crypto import chunk_place, digests_place, open_and_digest
from storage.errors import BadRange, Corrupt, FileNotFound
from storage.hashing import chunk_digest_of, digest_size, off_loop
from storage.info import FileInfo
from storage.store import Store

#: Chunks queued (verified or being verified) behind the one being sent;
#: one more is being received. Memory: AHEAD + 2 chunks.
AHEAD = 1


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
        #: The chunks in flight (received, verified, sent) and one more: see bulk.Buffers.
        self._buffers = Buffers(AHEAD + 3)

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

        def piece(index: int, chunk: bytes | bytearray) -> memoryview:
            start = max(self.offset - index * size, 0)
            stop = min(end - index * size, len(chunk))
            view = memoryview(chunk)[start:stop]
            if self._hasher is not None:
                self._hasher.update(view)
            return view

        if first == last:
            # One chunk (every small file): nothing to overlap, no task to start.
            chunk = head if head is not None else await self._get(first)
            yield piece(first, await self._verify(first, chunk, digests))
            return
        ready: asyncio.Queue[asyncio.Future[bytes | bytearray]] = asyncio.Queue(maxsize=AHEAD)
        producer = asyncio.create_task(self._produce(first, last, digests, head, ready))
        try:
            for index in range(first, last + 1):
                yield piece(index, await (await ready.get()))
        finally:
            pending: list[asyncio.Future[Any]] = [producer]
            while not ready.empty():
                pending.append(ready.get_nowait())
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _produce(
        self,
        first: int,
        last: int,
        digests: bytes | bytearray,
        head: bytes | None,
        ready: asyncio.Queue[asyncio.Future[bytes | bytearray]],
    ) -> None:
        """Fetch chunks in order, one GET at a time; queue each while it is verified.

        The next GET starts as soon as a chunk has arrived, not once it has
        been checked: receiving and hashing overlap (measured: +20 %). The
        queue holds AHEAD chunks, so a slow reader stops the fetching.
        """
        width = digest_size(self.info.check)
        for index in range(first, last + 1):
            at = (index - first) * width
            try:
                chunk = head if index == first and head is not None else await self._get(index)
            except Exception as exc:
                # Handed on in order: the reader sees it after the chunks before.
                failed: asyncio.Future[bytes | bytearray] = (
                    asyncio.get_running_loop().create_future()
                )
                failed.set_exception(exc)
                await ready.put(failed)
                return
            verified = asyncio.ensure_future(self._verify(index, chunk, digests[at : at + width]))
            await ready.put(verified)

    async def _start(self, first: int, last: int) -> tuple[bytes | bytearray, bytes | None]:
        """The range's chunk digests and its first chunk (None: fetch it), in one round trip."""
        width = digest_size(self.info.check)
        start, stop = first * width, (last + 1) * width
        if self._digests is not None:
            # They came with the info (one node); chunk 0 too when it is small.
            digests = self._open_digests(self._digests)[start:stop]
            if len(digests) != stop - start:
                await self._lost("chunk checksums")
            return digests, self._head if first == 0 else None
        digests_name = keys.digests_key(self.info.vid)
        chunk_name = keys.chunk_key(self.info.vid, first)

        def queue(pipe: Any) -> None:
            if self.info.encrypted:  # sealed whole: no range of it can be checked
                pipe.get(digests_name)
            else:
                pipe.getrange(digests_name, start, stop - 1)
            pipe.get(chunk_name)

        digests, head = await self.store.run(
            functools.partial(self.store.batch, queue), idempotent=True, kind="chunk_read"
        )
        if self.info.encrypted and digests is not None:
            digests = self._open_digests(digests)[start:stop]
        if digests is None or len(digests) != stop - start:
            await self._lost("chunk checksums")
        return digests, head

    async def _get(self, index: int) -> bytes | bytearray | None:
        return await self.store.get_chunk(keys.chunk_key(self.info.vid, index), self._buffers)

    def _open_digests(self, stored: bytes) -> bytes | bytearray:
        if not self.info.encrypted:
            return stored
        return self.store.sealer.open(digests_place(self.namespace, self.info.vid), stored)

    async def _verify(
        self, index: int, chunk: bytes | bytearray | None, digest: bytes | bytearray
    ) -> bytes | bytearray:
        if chunk is None:
            await self._lost(f"chunk {index}")
        expected = min(self.info.chunk_size, self.info.size - index * self.info.chunk_size)
        if self.info.encrypted:
            # Opened (its tag checked) and its checksum taken in one worker thread.
            place = chunk_place(self.namespace, self.info.vid, index)
            plain, sha = await off_loop(
                len(chunk), open_and_digest, self.store.sealer, place, chunk, self.info.check
            )
            if len(plain) != expected or sha != digest:
                raise Corrupt(f"chunk {index} does not match its recorded checksum")
            return plain
        if len(chunk) != expected or await chunk_digest_of(chunk, self.info.check) != digest:
            raise Corrupt(f"chunk {index} does not match its recorded checksum")
        return chunk

    async def _lost(self, what: str) -> NoReturn:
        """Missing data: gone with its version (not_found) or damaged (corrupt)."""
        current = await self.store.current_vid(self.namespace, self.info.key)
        if current != self.info.vid:
            raise FileNotFound("the file expired or was deleted while being read")
        raise Corrupt(f"{what} missing from storage")


async def open_download(
    store: Store,
    namespace: str,
    key: str,
    offset: int | None,
    length: int | None,
    version: str | None = None,
) -> Download:
    """A download of ``key``; with ``version``, of that version or FileNotFound.

    The version is checked before the range: a client resuming a replaced
    version learns that it is gone, not that its offset passes the new one.
    """
    info, digests, head = await store.open_for_read(namespace, key)
    if version is not None and info.vid != version:
        raise FileNotFound("that version of the file is no longer stored")
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
