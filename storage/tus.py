"""The chunk writer of a tus upload: a resumable upload that lives across requests.

A tus client sends a file as a series of PATCH requests, each on whatever
connection it likes. Resuming the upload from Valkey at every PATCH would
read back and re-hash every byte stored so far (decision 0010), so a
1 GiB file in 8 MiB PATCHes would be hashed 64 times over. Instead the
writer outlives its request: after each PATCH it *checkpoints* (stores the
partial last chunk and records it, staying the upload's owner) and waits in
the process for the next PATCH (:mod:`service.http.parked`). Valkey then
always holds every byte of every finished PATCH, so a HEAD on any server,
or a RESUME after this process died, finds the right offset.

A PATCH with ``Upload-Checksum`` *holds* the chunks it completes: they are
stored, but not recorded, until the PATCH's bytes are verified. On a
mismatch the writer is simply forgotten: Valkey still describes the upload
as the last checkpoint left it, exactly the bytes before that PATCH, and
the unrecorded chunks are overwritten when the client sends those bytes
again (or expire). The next PATCH resumes from Valkey.

Upload ids of tus uploads start with :data:`TUS_PREFIX`, so the binary
door's RESUME never takes one (docs/http.md section 7).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from storage import keys
from storage import upload_seals as seals
from storage.errors import StorageError
from storage.hashing import CHECK, new_vid, off_loop
from storage.resumable import ResumableWriter, new_upload_id
from storage.store import Store
from storage.uploads import UploadFacts

#: What every tus upload id starts with (a binary upload id never does).
TUS_PREFIX = "tus."


class TusWriter(ResumableWriter):
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
        super().__init__(store, namespace, upload_id, owner, facts, deadline=deadline)
        #: What the creation fixed: the key, the declared length, the tus metadata.
        self.facts = facts
        # Chunks stored but not yet recorded (a checksummed PATCH in progress).
        self._held: list[tuple[int, bytes]] | None = None

    @classmethod
    async def start(
        cls,
        store: Store,
        namespace: str,
        key: str,
        *,
        ttl: int,
        content_type: str | None,
        size: int,
        max_open: int,
        tus: dict[str, str],
    ) -> tuple[TusWriter, int]:
        """A new tus upload (creation), and how many of the namespace's uploads
        were found expired; :class:`TooManyUploads` past ``max_open``."""
        # Sealed or not for good, as a PUT of the binary door decides (decision 0012).
        facts = UploadFacts(
            key,
            new_vid(),
            size,
            ttl,
            content_type,
            store.config.chunk_size,
            encrypted=store.sealer.encrypting,
            tus=tus,
            check=CHECK,
        )
        return await cls._record(store, namespace, TUS_PREFIX + new_upload_id(), facts, max_open)

    @property
    def done(self) -> bool:
        """True once committed, left, aborted or forgotten: no longer usable."""
        return self._done

    # -- one PATCH ----------------------------------------------------------

    def hold(self) -> None:
        """Store the chunks completed from now on, but do not record them yet."""
        self._held = []

    async def release(self) -> None:
        """The held bytes are verified: record their chunks, in order."""
        await self._settle()
        held, self._held = self._held or [], None
        for index, sha in held:
            await ResumableWriter._chunk_stored(self, index, sha)

    async def _chunk_stored(self, index: int, sha: bytes) -> None:
        if self._held is not None:
            self._held.append((index, sha))
            return
        await super()._chunk_stored(index, sha)

    async def checkpoint(self) -> None:
        """Record every byte written so far, the partial last chunk included, and
        stay the owner: what Valkey says is now exactly this writer's offset.

        Each checkpoint stores its partial chunk under a token of its own, so
        the one it replaces stays readable until the new one is recorded.
        """
        await self._settle()
        if self._held:
            raise AssertionError("checkpoint with chunks held back")
        if self._fill == self._tail_len:
            if self.size > self._renewed:
                await self._refresh()  # push the deadline: bytes arrived
            return
        token, length, digest = "", 0, b""
        if self._fill:
            token, length = secrets.token_hex(8), self._fill
            digest = await self._store_partial(token)
        recorded = await self._record_offset(
            token, token, length, digest, renew=True, keep_owner=True
        )
        if not recorded.tail_recorded:
            raise StorageError("a tus checkpoint found the upload's chunk count changed")
        self.deadline = recorded.deadline
        self._renewed = self.size
        self._tail, self._tail_len = token, length
        if recorded.replaced and recorded.replaced != token:
            await self._unlink_quietly([keys.partial_key(self.vid, recorded.replaced)])

    def trim(self) -> None:
        """Between two PATCHes keep only the partial chunk's bytes, not two buffers."""
        if self._buffers:
            self._buffers = [bytearray(memoryview(self._buffers[0])[: self._fill]), bytearray()]

    async def forget(self) -> None:
        """Drop the writer without recording anything more: Valkey keeps the
        upload as the last checkpoint (or chunk record) left it."""
        if self._done:
            return
        await self._halt()
        self._held = None
        self._buffers = []

    async def still_ours(self) -> bool:
        """True when no other server took the upload over since this writer last wrote."""
        if self._done or self.lost:
            return False
        try:
            await self._refresh()
        except StorageError:
            return False
        return not self.lost

    async def whole_sha1(self) -> str:
        """The SHA-1 of every byte written so far (hex), without ending the upload."""
        await self._settle()
        whole = self._file_hash.copy()
        tail = memoryview(self._buffers[0])[: self._fill]
        await off_loop(len(tail), whole.update, tail)
        return whole.hexdigest()


@dataclass(frozen=True, slots=True)
class Peeked:
    """A tus upload as a HEAD sees it, without taking it over."""

    facts: UploadFacts
    #: Bytes recorded: where the client goes on.
    offset: int
    #: Unix seconds after which the upload is gone.
    deadline: float


async def peek_upload(store: Store, namespace: str, upload_id: str) -> Peeked | bool:
    """The upload's recorded state; else True when it is known to have expired
    (its id still listed among the namespace's open uploads), False when unknown."""
    ns = keys.NamespaceKeys(namespace)
    state = ns.upload(upload_id)

    def queue(pipe: Any) -> None:
        pipe.hmget(state, ["meta", "chunks", "tail_len", "deadline"])
        pipe.zscore(ns.uploads, upload_id)

    # One round trip on one node: a HEAD is what a tus client polls with.
    (meta, chunks, tail_len, deadline), listed = await store.run(
        lambda: store.batch(queue), idempotent=True
    )
    if meta is None or chunks is None or tail_len is None or deadline is None:
        return listed is not None and listed / 1000 <= time.time() + 1
    facts = UploadFacts(**seals.load_facts(store.sealer, namespace, meta))
    offset = int(chunks) * facts.chunk_size + int(tail_len)
    return Peeked(facts, offset, int(deadline) / 1000)


async def terminate(store: Store, namespace: str, upload_id: str) -> bool:
    """Discard a tus upload and its bytes, whoever holds it (tus termination);
    False when there was none. A writer of another process finds it gone at
    its next touch and stops."""
    peeked = await peek_upload(store, namespace, upload_id)
    if not isinstance(peeked, Peeked):
        return False
    found = await store.discard_upload(namespace, upload_id, "")
    if found is None:
        return False
    chunks, tail = found
    vid = peeked.facts.vid
    # One more than recorded: a chunk a checksummed PATCH stored and held back.
    names = keys.chunk_keys(vid, chunks + 1)
    if tail:
        names.append(keys.partial_key(vid, tail))
    with contextlib.suppress(StorageError):  # else they expire with the staging TTL
        await store.unlink_many(names)
    return True
