"""The async chunk writer: an upload's bytes into fixed-size Valkey chunks.

DATA frames of any size are copied into a chunk buffer; each full buffer is
written as one ``SET valise:c:VID:I`` with the short staging TTL while the next
buffer fills (two buffers, one SET in flight: memory per upload is bounded by
two chunks whatever the file size). Each chunk's checksum (storage/hashing.py)
and the whole file's running SHA-1 are computed in a worker thread alongside
its SET, in chunk order, off the event loop. Nothing is visible until :meth:`ChunkWriter.commit`,
and only when the whole file's SHA-1 matches END's.

While the upload lives, a keeper task pushes the staging TTL forward (``GT``:
it never shortens a TTL) so a stalled but connected client keeps its chunks;
a vanished client or killed server leaves keys that expire within the staging
TTL, with no sweeper (docs/decisions/0003-ttls-staging-and-grace.md).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from typing import Any

from storage import keys
from storage.crypto import chunk_place, digests_place, seal_and_digest
from storage.errors import ChecksumMismatch, StorageError, StorageUnavailable
from storage.hashing import CHECK, chunk_digest, new_vid, off_loop
from storage.info import FileInfo
from storage.store import SMALL_FILE, Store

log = logging.getLogger("valise.storage")


class ChunkWriter:
    """An upload that lives as long as its connection (see :mod:`storage.resumable`
    for one that outlives it)."""

    def __init__(
        self,
        store: Store,
        namespace: str,
        key: str,
        *,
        ttl: int,
        content_type: str | None,
        if_absent: bool = False,
        vid: str | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.key = key
        self.ttl = ttl
        self.content_type = content_type
        #: Commit only if the key has no file then (docs/protocol.md section 6.4).
        self.if_absent = if_absent
        self.vid = vid or new_vid()
        #: Sealing this version's values (--encryption-key-file), decided once.
        self._sealer = store.sealer if store.sealer.encrypting else None
        self.chunk_size = chunk_size or store.config.chunk_size
        #: How each chunk is checked (storage/hashing.py); a resumed upload keeps its own.
        self.check = CHECK
        # Grown as bytes arrive; full-size buffers only once a chunk has filled.
        self._buffers = [bytearray(), bytearray()]
        self._fill = 0
        self._digests: list[bytes] = []
        #: The whole file's SHA-1, fed one chunk at a time in order (at most
        #: one chunk is hashed at a time: the next waits in ``_settle``).
        self._file_hash = hashlib.sha1(usedforsecurity=False)
        self._inflight: asyncio.Task[bytes] | None = None
        self._keeper: asyncio.Task[None] | None = None
        #: When the staged chunks' TTL was last pushed forward (by progress or keeper).
        self._renewed_at = time.monotonic()
        self._lock = asyncio.Lock()
        self._closed = False
        self._done = False
        self.size = 0
        #: After commit: whether it replaced a file (None: the commit's reply was
        #: lost and Valkey said only that the file is ours).
        self.replaced: bool | None = None

    @property
    def upload_id(self) -> str:
        """The first OK's ``upload_id``: the version being written (docs/protocol.md section 8)."""
        return self.vid

    @property
    def chunks_written(self) -> int:
        return len(self._digests) + (1 if self._inflight is not None else 0)

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            buffer = self._buffers[0]
            take = min(len(view), self.chunk_size - self._fill)
            if len(buffer) == self._fill:
                # The first chunk grows with the bytes received: a client that
                # drips costs what it sent, not a whole chunk.
                buffer += view[:take]
            else:
                buffer[self._fill : self._fill + take] = view[:take]
            self._fill += take
            self.size += take
            view = view[take:]
            if self._fill == self.chunk_size:
                await self._flush()

    async def _flush(self) -> None:
        """Start the SET of the filled buffer; wait for the previous one first."""
        await self._settle()
        index = len(self._digests)
        chunk = memoryview(self._buffers[0])[: self._fill]
        self._inflight = asyncio.create_task(self._store_chunk(index, chunk))
        # Swap: fill the other buffer while this one is on its way. The spare
        # is empty (it grows) until a previous chunk's buffer is free for reuse.
        self._buffers = [self._buffers[1], self._buffers[0]]
        self._fill = 0
        self._start_keeper()

    async def _settle(self) -> None:
        if self._inflight is not None:
            task, self._inflight = self._inflight, None
            self._digests.append(await task)

    async def _halt(self) -> bool:
        """Stop for good: no keeper, no SET in flight. Whether one was (it may have landed)."""
        self._done = True
        await self._stop_keeper()
        if self._inflight is None:
            return False
        task, self._inflight = self._inflight, None
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def _store_chunk(self, index: int, chunk: memoryview) -> bytes:
        name = keys.chunk_key(self.vid, index)
        staging_ms = self._staging_ms
        # Progress renews the staged chunks: an upload receiving bytes never
        # loses them, however late the event loop runs the keeper (which is
        # left with the client that is connected but silent).
        renew: list[str] = []
        now = time.monotonic()
        if index and now - self._renewed_at > staging_ms / 2000:
            renew = keys.chunk_keys(self.vid, index)
            self._renewed_at = now
        if self._sealer is not None:
            # Sealed before it leaves: the checksum and the seal in one worker thread.
            sha, sealed = await self._hash_and_seal(index, chunk)
            await self.store.set_chunk(name, sealed, staging_ms, renew=renew)
            await self._chunk_stored(index, sha)
            return sha
        digest = asyncio.create_task(self._hash(chunk))
        try:
            await self.store.set_chunk(name, chunk, staging_ms, renew=renew)
        finally:
            sha = await digest
        await self._chunk_stored(index, sha)
        return sha

    @property
    def _staging_ms(self) -> int:
        """The TTL of a chunk written before the commit."""
        return self.store.config.staging_ttl * 1000

    @property
    def _keep_period(self) -> float:
        """Seconds between two refreshes of the staged chunks' TTL."""
        return max(1.0, self.store.config.staging_ttl / 3)

    async def _chunk_stored(self, index: int, sha: bytes) -> None:
        """Chunk ``index`` is in Valkey (a resumable upload records it)."""

    async def _hash(self, chunk: memoryview) -> bytes:
        """The chunk's checksum, and the file's SHA-1 fed; in a worker thread when large."""
        return await off_loop(len(chunk), self._hash_now, chunk)

    def _hash_now(self, chunk: memoryview) -> bytes:
        self._file_hash.update(chunk)
        return chunk_digest(chunk, self.check)

    async def _hash_and_seal(self, index: int, chunk: memoryview) -> tuple[bytes, memoryview]:
        """:meth:`_hash` and the chunk sealed for its place, in one worker thread."""
        assert self._sealer is not None
        place = chunk_place(self.namespace, self.vid, index)
        sealed, sha = await off_loop(
            len(chunk),
            seal_and_digest,
            self._sealer,
            place,
            chunk,
            self.check,
            self._file_hash.update,
        )
        return sha, sealed

    def _stored_digests(self) -> memoryview | bytes:
        """The digest list as Valkey keeps it: sealed when the chunks are."""
        digests = b"".join(self._digests)
        if self._sealer is None:
            return digests
        return self._sealer.seal(digests_place(self.namespace, self.vid), digests)

    def _start_keeper(self) -> None:
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep_alive())

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._keep_period)
            async with self._lock:
                if self._closed:
                    return
                if time.monotonic() - self._renewed_at < self._keep_period:
                    continue  # progress renewed them meanwhile
                self._renewed_at = time.monotonic()
                try:
                    await self._refresh()
                except StorageError:
                    log.warning("could not refresh the staging TTL of an upload in progress")

    async def _refresh(self) -> None:
        """Push the staged chunks' TTL forward (never shorter: GT)."""
        names = keys.chunk_keys(self.vid, self.chunks_written)
        await self.store.expire_many(names, self._staging_ms, "GT")

    async def _stop_keeper(self) -> None:
        async with self._lock:
            self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None

    async def commit(self, size: int, sha1: str) -> FileInfo:
        """Check the file's SHA-1 against ``sha1`` (END's), store the tail, extend
        every chunk to its final TTL, then commit atomically.

        A digest that does not match raises :class:`ChecksumMismatch` and
        removes what was staged."""
        if size != self.size:
            raise AssertionError("writer and protocol disagree on the upload size")
        try:
            await self._settle()
            await self._stop_keeper()
            tail = memoryview(self._buffers[0])[: self._fill] if self._fill else None
            if tail is not None and self._sealer is not None:
                sha, tail = await self._hash_and_seal(len(self._digests), tail)
                self._digests.append(sha)
            elif tail is not None:
                self._digests.append(await self._hash(tail))
            actual = self._file_hash.hexdigest()
            if actual != sha1:
                raise ChecksumMismatch(expected=sha1, actual=actual)
            now = time.time()
            info = FileInfo(
                key=self.key,
                size=size,
                sha1=sha1,
                content_type=self.content_type,
                chunk_size=self.chunk_size,
                chunks=len(self._digests),
                created_at=now,
                expires_at=now + self.ttl,
                vid=self.vid,
                encrypted=self._sealer is not None,
                check=self.check,
            )
            # On one node a small one-chunk file is written with its commit.
            one_trip = (
                self._one_trip
                and tail is not None
                and len(self._digests) == 1
                and size <= SMALL_FILE
            )
            if not one_trip:
                await self._finish_chunks(tail)
        except BaseException:
            await self.abort()
            raise
        try:
            if one_trip:
                assert tail is not None
                self.replaced = await self.store.commit_one(
                    self.namespace,
                    info,
                    self.ttl,
                    tail,
                    self._stored_digests(),
                    self._final_ms,
                    if_absent=self.if_absent,
                )
            else:
                self.replaced = await self._publish(info)
        except StorageUnavailable:
            # The script may have run and only its reply been lost: never remove
            # chunks that may be visible. Ask; if Valkey cannot say, the chunks
            # expire with the file's own TTL.
            self._done = True
            if await self._committed():
                return info
            raise
        except BaseException:
            await self.abort()
            raise
        self._done = True
        self._buffers = []
        return info

    @property
    def _one_trip(self) -> bool:
        return self.store.one_trip_small_files

    async def _publish(self, info: FileInfo) -> bool:
        """The atomic step that makes the checked upload the key's file; True when
        it replaced one."""
        return await self.store.commit(self.namespace, info, self.ttl, if_absent=self.if_absent)

    async def _committed(self) -> bool:
        try:
            return await self.store.current_vid(self.namespace, self.key) == self.vid
        except StorageError:
            return False

    async def _finish_chunks(self, tail: memoryview | None) -> None:
        """One pipeline: the tail chunk and the digest list at their final TTL,
        and every earlier chunk's TTL extended to it (a one-chunk file: one trip)."""
        final_ms = self._final_ms
        names = self._chunk_names()
        earlier = names[:-1] if tail is not None else names
        if not names:
            return
        tail_name = names[-1]
        digests = self._stored_digests()

        def queue(pipe: Any) -> None:
            for name in earlier:
                pipe.pexpire(name, final_ms)
            if tail is not None:
                pipe.set(tail_name, tail, px=final_ms)
            pipe.set(keys.digests_key(self.vid), digests, px=final_ms)

        replies = await self.store.run(
            functools.partial(self.store.batch, queue), idempotent=True, kind="commit"
        )
        extended = replies[: len(earlier)]
        if not all(extended):
            # A staged chunk expired before its TTL was extended (Valkey or this
            # server stalled past the staging TTL). Publishing would make a file
            # with a hole: refuse, and the caller aborts the upload.
            raise StorageUnavailable("the upload's staged chunks expired before the commit")

    @property
    def _final_ms(self) -> int:
        """The TTL of a committed file's chunks: the file's own, plus grace for readers."""
        return (self.ttl + self.store.config.grace) * 1000

    def _chunk_names(self) -> list[str]:
        return keys.chunk_keys(self.vid, len(self._digests))

    async def abort(self) -> None:
        """Discard the upload: remove what was written (or let the staging TTL do it)."""
        if self._done:
            return
        if await self._halt():
            # The in-flight SET may have landed; count it so it is removed too.
            self._digests.append(b"")
        names = [*self._chunk_names(), keys.digests_key(self.vid)]
        self._digests = []
        self._buffers = []
        try:
            await self.store.unlink_many(names)
        except StorageError:
            log.warning("could not remove an aborted upload's chunks; they expire on their own")
