"""The chunk writer of a resumable upload (docs/protocol.md section 6.1).

It writes chunks exactly as :class:`~storage.writer.ChunkWriter` does, and
records each one in the upload's state in Valkey (:mod:`storage.uploads`) as
soon as it is stored, with its checksum. When the connection ends, whatever the
reason, :meth:`ResumableWriter.detach` stores the partial last chunk too, so
a RESUME (on any server sharing the Valkey) goes on from the last byte read.

Only one connection owns an upload at a time: each attachment has a random
owner token, a RESUME makes its own the owner, and every script that
records progress checks it. A writer that finds it has lost the upload
raises :class:`~storage.errors.Superseded` and never removes a byte of it.

A RESUME rebuilds the whole file's running SHA-1 from the chunks already
stored, verifying each against its recorded digest as it goes, one chunk
fetched while the one before is hashed: two chunks of memory whatever the
size (docs/decisions/0010-resumable-uploads.md measures what it costs).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable
from typing import Self

from storage import keys
from storage import upload_seals as seals
from storage.errors import Corrupt, FileNotFound, StorageError, Superseded, TooManyUploads
from storage.hashing import (
    CHECK,
    chunk_digest,
    chunk_digest_of,
    digest_size,
    new_vid,
    off_loop,
)
from storage.info import FileInfo
from storage.store import Store
from storage.uploads import Recorded, UploadFacts, UploadState
from storage.writer import ChunkWriter

log = logging.getLogger("valise.storage")

NOT_FOUND = "no resumable upload with that id (unknown, expired, finished or aborted)"


def new_upload_id() -> str:
    """192 random bits: knowing a key, or other ids, never helps to guess one."""
    return secrets.token_urlsafe(24)


def new_owner() -> str:
    """An attachment's token: names the connection that owns the upload."""
    return secrets.token_hex(8)


class ResumableWriter(ChunkWriter):
    def __init__(
        self,
        store: Store,
        namespace: str,
        upload_id: str,
        owner: str,
        facts: UploadFacts,
        *,
        deadline: float,
    ) -> None:
        super().__init__(
            store,
            namespace,
            facts.key,
            ttl=facts.ttl,
            content_type=facts.content_type,
            vid=facts.vid,
            chunk_size=facts.chunk_size,
            if_absent=facts.if_absent,
        )
        self._upload_id = upload_id
        self.check = facts.check
        # Sealed or not as its PUT began it (storage/upload_seals.py).
        self._sealer = store.sealer if facts.encrypted else None
        #: This attachment's token: the upload's owner while nobody resumes it elsewhere.
        self.owner = owner
        #: The size the PUT declared, if it did.
        self.declared = facts.size
        #: Unix seconds after which the upload is gone (``resume_until``).
        self.deadline = deadline
        self.resume_ttl = store.config.resume_ttl
        #: The offset this attachment started from: bytes the client did not resend.
        self.resumed_from = 0
        # self.size when the deadline was last pushed: only arriving bytes push it.
        self._renewed = 0
        # Another connection owns the upload now: never touch it again.
        self._lost = False
        #: Called once the writer finds the upload taken over (so the door can stop).
        self.on_lost: Callable[[], None] | None = None
        # The recorded partial last chunk (token, length) while the buffer still holds it.
        self._tail = ""
        self._tail_len = 0

    @property
    def upload_id(self) -> str:
        return self._upload_id

    @property
    def lost(self) -> bool:
        """True once another connection has taken the upload over."""
        return self._lost

    def _lose(self) -> None:
        if not self._lost:
            self._lost = True
            if self.on_lost is not None:
                self.on_lost()

    # -- starting ---------------------------------------------------------

    @classmethod
    async def create(
        cls,
        store: Store,
        namespace: str,
        key: str,
        *,
        ttl: int,
        content_type: str | None,
        size: int | None,
        max_open: int,
        if_absent: bool = False,
    ) -> tuple[ResumableWriter, int]:
        """A new resumable upload, and how many of the namespace's were found expired.

        Raises :class:`TooManyUploads` when the namespace has ``max_open`` already.
        """
        chunk_size, encrypted = store.config.chunk_size, store.sealer.encrypting
        facts = UploadFacts(
            key, new_vid(), size, ttl, content_type, chunk_size, if_absent, encrypted, check=CHECK
        )
        return await cls._record(store, namespace, new_upload_id(), facts, max_open)

    @classmethod
    async def _record(
        cls, store: Store, namespace: str, upload_id: str, facts: UploadFacts, max_open: int
    ) -> tuple[Self, int]:
        """Record a new upload of ``facts`` in Valkey and own it (binary door and tus)."""
        owner = new_owner()
        deadline, expired = await store.create_upload(
            namespace,
            upload_id,
            owner,
            facts,
            resume_ttl=store.config.resume_ttl,
            max_open=max_open,
        )
        if deadline is None:
            raise TooManyUploads(
                f"this namespace already has {max_open} open resumable uploads "
                "(--max-resumable); finish, abort or let one expire first"
            )
        writer = cls(store, namespace, upload_id, owner, facts, deadline=deadline)
        writer._start_keeper()
        return writer, expired

    @classmethod
    async def resume(cls, store: Store, namespace: str, upload_id: str) -> ResumableWriter:
        """Take the upload over and rebuild its running SHA-1; ``not_found`` if it is gone
        (or its stored bytes are: then it is discarded)."""
        owner = new_owner()
        state = await store.claim_upload(
            namespace, upload_id, owner, resume_ttl=store.config.resume_ttl
        )
        if state is None:
            raise FileNotFound(NOT_FOUND)
        # Begun by a newer server (a check unknown here): Corrupt, and the upload
        # is left as it is, for a server that knows its check.
        width = digest_size(state.facts.check)
        writer = cls(store, namespace, upload_id, owner, state.facts, deadline=state.deadline)
        try:
            await writer._restore(state, width)
        except (FileNotFound, Corrupt):
            await writer.abort()
            raise FileNotFound(
                "the upload's stored bytes are gone or damaged; it is discarded"
            ) from None
        except BaseException:
            # Left as it is: the next RESUME takes it over again.
            writer._done = True
            writer._buffers = []
            raise
        writer._start_keeper()
        return writer

    async def _restore(self, state: UploadState, width: int) -> None:
        """``width``: the size of one of its chunk checksums (``state.facts.check``)."""
        self._digests = seals.open_digests(
            self._sealer, self.namespace, self.vid, state.digests, width
        )
        if len(self._digests) != state.chunks:
            raise Corrupt("the upload's chunk digests do not match its chunk count")
        self._tail, self._tail_len = state.tail, state.tail_len
        self.size = self.resumed_from = self._renewed = state.offset
        # First make sure nothing expires while the digest is rebuilt.
        names = keys.chunk_keys(self.vid, state.chunks)
        if state.tail:
            names.append(keys.partial_key(self.vid, state.tail))
        await self.store.expire_many(names, self._staging_ms, "GT")
        await self._rebuild(state, width)

    async def _rebuild(self, state: UploadState, width: int) -> None:
        """Feed the file's SHA-1 with every stored chunk, each checked against its digest;
        load the partial last chunk into the buffer (hashed when its chunk is full)."""
        fetching: asyncio.Future[bytes | bytearray | None] | None = None

        def fetch(index: int) -> asyncio.Future[bytes | bytearray | None]:
            return asyncio.ensure_future(self.store.get_chunk(keys.chunk_key(self.vid, index)))

        try:
            fetching = fetch(0) if state.chunks else None
            for index in range(state.chunks):
                assert fetching is not None
                chunk = await fetching
                fetching = fetch(index + 1) if index + 1 < state.chunks else None
                if chunk is None:
                    raise FileNotFound(f"chunk {index} of the upload is gone")
                if not await self._replay(index, memoryview(chunk), self._digests[index]):
                    raise Corrupt(f"chunk {index} of the upload does not match its digest")
        finally:
            if fetching is not None:
                fetching.cancel()
                await asyncio.gather(fetching, return_exceptions=True)
        if state.tail:
            stored = await self.store.get_chunk(keys.partial_key(self.vid, state.tail))
            tail, expected = seals.open_tail(
                self._sealer, self.namespace, self.vid, state, stored, width
            )
            if tail is None or len(tail) != state.tail_len:
                raise FileNotFound("the upload's partial last chunk is gone")
            if await chunk_digest_of(tail, self.check) != expected:
                raise Corrupt("the upload's partial last chunk does not match its digest")
            self._buffers[0] = bytearray(tail)
            self._fill = len(tail)

    async def _replay(self, index: int, chunk: memoryview, digest: bytes) -> bool:
        return await off_loop(len(chunk), self._replay_now, index, chunk, digest)

    def _replay_now(self, index: int, chunk: memoryview, digest: bytes) -> bool:
        if self._sealer is not None:  # opened (its tag checked) before it is hashed
            chunk = seals.open_chunk(self._sealer, self.namespace, self.vid, index, chunk)
        if len(chunk) != self.chunk_size:
            return False
        if chunk_digest(chunk, self.check) != digest:
            return False
        self._file_hash.update(chunk)
        return True

    # -- while bytes arrive -----------------------------------------------

    async def write(self, data: bytes | memoryview) -> None:
        if self._lost:
            raise Superseded("another connection resumed this upload")
        await super().write(data)

    @property
    def _keep_period(self) -> float:
        return max(0.1, min(60.0, self.resume_ttl / 3))

    @property
    def _staging_ms(self) -> int:
        """Chunks outlive the deadline by one keeper period at most (the keeper
        pushes them that far ahead, so they never expire before it)."""
        return (self.resume_ttl + math.ceil(self._keep_period)) * 1000

    async def _chunk_stored(self, index: int, sha: bytes) -> None:
        if self._lost:
            raise Superseded("another connection resumed this upload")
        sha = seals.record_digest(self._sealer, self.namespace, self.vid, index, sha)
        try:
            recorded = await self.store.advance_upload(
                self.namespace, self.upload_id, self.owner, index, sha, resume_ttl=self.resume_ttl
            )
        except Superseded:
            self._lose()
            raise
        self.deadline = recorded.deadline
        self._renewed = (index + 1) * self.chunk_size
        self._tail, self._tail_len = "", 0
        if recorded.replaced:
            await self._unlink_quietly([keys.partial_key(self.vid, recorded.replaced)])

    async def _refresh(self) -> None:
        """Still ours? With bytes arrived since the last push, push the deadline and
        every chunk's TTL."""
        renew = self.size > self._renewed
        try:
            self.deadline = await self.store.touch_upload(
                self.namespace, self.upload_id, self.owner, resume_ttl=self.resume_ttl, renew=renew
            )
        except Superseded:
            self._lose()
            return
        if renew:
            self._renewed = self.size
            names = keys.chunk_keys(self.vid, self.chunks_written)
            if self._tail:
                names.append(keys.partial_key(self.vid, self._tail))
            await self.store.expire_many(names, self._staging_ms, "GT")

    # -- ending -----------------------------------------------------------

    @property
    def _one_trip(self) -> bool:
        return False  # the commit also drops the upload's state

    async def _finish_chunks(self, tail: memoryview | None) -> None:
        # Not ours any more: do not touch the new owner's chunks.
        await self.store.touch_upload(
            self.namespace, self.upload_id, self.owner, resume_ttl=self.resume_ttl, renew=False
        )
        await super()._finish_chunks(tail)

    async def _publish(self, info: FileInfo) -> bool:
        replaced = await self.store.commit_resumable(
            self.namespace, info, self.ttl, self.upload_id, self.owner, if_absent=self.if_absent
        )
        if self._tail:
            await self._unlink_quietly([keys.partial_key(self.vid, self._tail)])
        return replaced

    async def detach(self, unread: bytes = b"") -> None:
        """The connection ended: keep every byte read (``unread``: a DATA frame cut
        off midway) for a RESUME. Never raises a storage error; bytes it cannot
        store are simply not counted in the next RESUME's offset."""
        if self._done:
            return
        intact = True
        try:
            if unread and not self._lost:
                await self.write(unread)
            await self._settle()
        except StorageError as exc:
            intact = False  # the chunk in flight may be lost: so is what follows it
            if not self._lost:
                log.warning("a resumable upload lost bytes as it was left: %s", exc.message)
        self._done = True
        await self._stop_keeper()
        if not self._lost:
            await self._record_tail(intact)
        self._buffers = []

    async def _record_tail(self, intact: bool) -> None:
        token, length, digest = self._tail, self._tail_len, b""
        wrote = False
        unchanged = self._fill == self._tail_len
        if intact and not unchanged:
            token, length = "", 0
            if self._fill:
                try:
                    digest = await self._store_partial(self.owner)
                    token, length, wrote = self.owner, self._fill, True
                except StorageError:
                    log.warning("could not store the partial last chunk of a resumable upload")
                    token, length, digest = self._tail, self._tail_len, b""
        try:
            recorded = await self._record_offset(
                token if wrote else "", token, length, digest, renew=self.size > self._renewed
            )
        except Superseded:
            return
        except StorageError:
            # Whatever was recorded stays; an unrecorded partial chunk expires.
            log.warning("could not record where a resumable upload stopped")
            return
        self.deadline = recorded.deadline
        stale = [recorded.replaced] if recorded.replaced and recorded.replaced != token else []
        if wrote and not recorded.tail_recorded:
            stale.append(self.owner)
        if stale:
            await self._unlink_quietly([keys.partial_key(self.vid, t) for t in stale])

    async def _store_partial(self, token: str) -> bytes:
        """Store the partial last chunk under ``token``: its SHA-1 as recorded (sealed
        for its place with encryption, storage/upload_seals.py)."""
        tail = memoryview(self._buffers[0])[: self._fill]
        digest, stored = await seals.seal_tail(
            self._sealer, self.namespace, self.vid, len(self._digests), token, tail, self.check
        )
        await self.store.set_chunk(keys.partial_key(self.vid, token), stored, self._staging_ms)
        return digest

    async def _record_offset(
        self,
        wrote: str,
        token: str,
        length: int,
        digest: bytes,
        *,
        renew: bool,
        keep_owner: bool = False,
    ) -> Recorded:
        """Record the whole chunks and the partial one (``token``) as the upload's
        offset. Superseded: this writer is no longer the owner, so the partial
        chunk it stored just now (``wrote``, when not empty) is removed."""
        try:
            return await self.store.detach_upload(
                self.namespace,
                self.upload_id,
                self.owner,
                resume_ttl=self.resume_ttl,
                renew=renew,
                chunks=len(self._digests),
                tail=token,
                tail_len=length,
                tail_sha1=digest,
                keep_owner=keep_owner,
            )
        except Superseded:
            self._lose()
            if wrote:
                await self._unlink_quietly([keys.partial_key(self.vid, wrote)])
            raise

    async def abort(self) -> None:
        """Discard the upload and its bytes (ABORT, a failed commit), if it is still ours."""
        if self._done:
            return
        written = len(self._digests) + (1 if await self._halt() else 0)
        self._digests = []
        self._buffers = []
        if self._lost:
            return
        try:
            found = await self.store.discard_upload(self.namespace, self.upload_id, self.owner)
        except StorageError:
            log.warning("could not discard a resumable upload; it expires on its own")
            return
        if found is None:
            return  # another connection has it now, or it is gone already
        chunks, tail = found
        names = keys.chunk_keys(self.vid, max(chunks, written))
        names.append(keys.digests_key(self.vid))
        names += [keys.partial_key(self.vid, t) for t in {tail, self._tail, self.owner} if t]
        await self._unlink_quietly(names)

    async def _unlink_quietly(self, names: list[str]) -> None:
        try:
            await self.store.unlink_many(names)
        except StorageError:
            log.warning("could not remove part of a resumable upload; it expires on its own")
