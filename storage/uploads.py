"""The Valkey side of resumable uploads: their state, and the scripts that change it.

A resumable upload's state lives in Valkey, not in a server's memory, so any
server sharing the Valkey can take a RESUME, after the first was killed too.
It sits under the namespace's hash tag (the upload is bound to its namespace,
and the commit can drop it in the same atomic step); its chunks are the
version's ordinary chunk keys. Layout, TTLs and the race between two servers:
docs/decisions/0010-resumable-uploads.md.

:class:`UploadStore` is a part of :class:`storage.store.Store` (every Valkey
command goes through the Store's methods), kept apart to keep both short.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from storage import keys, scripts
from storage.crypto import Sealer
from storage.errors import StorageError, Superseded
from storage.events import EventLog, stored_event
from storage.hashing import SHA1
from storage.info import FileInfo, commit_args
from storage.upload_seals import dump_facts, load_facts

T = TypeVar("T")

#: What the scripts answer when the caller no longer owns the upload.
GONE = "gone"
SUPERSEDED = "superseded"


@dataclass(frozen=True, slots=True)
class UploadFacts:
    """What the PUT fixed for good (section 6.1: RESUME cannot change them)."""

    key: str
    vid: str
    size: int | None
    ttl: int
    content_type: str | None
    chunk_size: int
    #: Commit only if the key has no file then (docs/protocol.md section 6.4).
    if_absent: bool = False
    #: Its chunks and digests are sealed (storage/upload_seals.py), for good.
    encrypted: bool = False
    #: A tus upload's own facts (its metadata, the whole-file SHA-1 it vouches
    #: for): docs/http.md section 7. None for an upload of the binary door.
    tus: dict[str, str] | None = None
    #: How its chunks are checked (storage/hashing.py); facts an older server
    #: stored name none, and its chunks have SHA-1s.
    check: str = SHA1

    def dumps(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "vid": self.vid,
                "size": self.size,
                "ttl": self.ttl,
                "content_type": self.content_type,
                "chunk_size": self.chunk_size,
                "if_absent": self.if_absent,
                "encrypted": self.encrypted,
                "tus": self.tus,
                "check": self.check,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def loads(cls, raw: bytes | str) -> UploadFacts:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class UploadState:
    """A resumable upload as a RESUME finds it."""

    facts: UploadFacts
    #: Whole chunks stored, and their checksums (raw, ``facts.check``'s size each).
    chunks: int
    digests: bytes
    #: The partial last chunk: its attachment token ('' for none), length, checksum.
    tail: str
    tail_len: int
    tail_sha1: bytes
    #: Unix seconds (Valkey's clock) after which the upload is gone.
    deadline: float

    @property
    def offset(self) -> int:
        """Bytes stored: where the client goes on (section 6.1)."""
        return self.chunks * self.facts.chunk_size + self.tail_len


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer of a script that changed an upload we own."""

    deadline: float
    #: The tail this change made obsolete ('' for none): its partial key can go.
    replaced: str = ""
    #: DETACH: False when the tail was not recorded (a chunk before it was lost).
    tail_recorded: bool = True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(ms: Any) -> float:
    return int(ms) / 1000


class UploadStore:
    """The Store's methods for resumable uploads (mixed into :class:`Store`)."""

    client: Any

    def _register_upload_scripts(self) -> None:
        register = self.client.register_script
        self._create_upload = register(scripts.CREATE_UPLOAD)
        self._claim_upload = register(scripts.CLAIM_UPLOAD)
        self._advance_upload = register(scripts.ADVANCE_UPLOAD)
        self._touch_upload = register(scripts.TOUCH_UPLOAD)
        self._detach_upload = register(scripts.DETACH_UPLOAD)
        self._discard_upload = register(scripts.DISCARD_UPLOAD)
        self._commit_resumable = register(scripts.COMMIT_RESUMABLE)

    async def _upload_script(
        self,
        script: Any,
        namespace: str,
        upload_id: str,
        args: list[Any],
        *,
        idempotent: bool,
    ) -> Any:
        ns = keys.NamespaceKeys(namespace)
        names = [ns.upload(upload_id), ns.upload_digests(upload_id), ns.uploads]
        return await self.run(
            lambda: script(keys=names, args=[upload_id, *args]), idempotent=idempotent
        )

    async def create_upload(
        self,
        namespace: str,
        upload_id: str,
        owner: str,
        facts: UploadFacts,
        *,
        resume_ttl: int,
        max_open: int,
    ) -> tuple[float | None, int]:
        """Record a new resumable upload: (its deadline, or None when the
        namespace already has ``max_open``; open uploads found expired)."""
        deadline, expired = await self._upload_script(
            self._create_upload,
            namespace,
            upload_id,
            [resume_ttl * 1000, owner, max_open, dump_facts(self.sealer, namespace, facts)],
            idempotent=False,
        )
        return (_seconds(deadline) if int(deadline) else None), int(expired)

    async def claim_upload(
        self, namespace: str, upload_id: str, owner: str, *, resume_ttl: int
    ) -> UploadState | None:
        """Make ``owner`` the upload's one owner (the newest wins); None if it is gone."""
        reply = await self._upload_script(
            self._claim_upload,
            namespace,
            upload_id,
            [resume_ttl * 1000, owner],
            idempotent=True,  # claiming twice for the same owner changes nothing more
        )
        if not reply:
            return None
        deadline, meta, chunks, tail, tail_len, tail_sha1, digests = reply
        return UploadState(
            facts=UploadFacts(**load_facts(self.sealer, namespace, meta)),
            chunks=int(chunks),
            digests=bytes(digests),
            tail=_text(tail),
            tail_len=int(tail_len),
            tail_sha1=bytes(tail_sha1),
            deadline=_seconds(deadline),
        )

    async def advance_upload(
        self,
        namespace: str,
        upload_id: str,
        owner: str,
        index: int,
        digest: bytes,
        *,
        resume_ttl: int,
    ) -> Recorded:
        """Record stored chunk ``index``; raises :class:`Superseded` if no longer ours."""
        reply = await self._upload_script(
            self._advance_upload,
            namespace,
            upload_id,
            [resume_ttl * 1000, owner, index, digest],
            idempotent=False,  # APPEND: a retry after a lost reply would record it twice
        )
        _check(reply)
        return Recorded(_seconds(reply[1]), _text(reply[2]))

    async def touch_upload(
        self, namespace: str, upload_id: str, owner: str, *, resume_ttl: int, renew: bool
    ) -> float:
        """Check the upload is still ours (and with ``renew``, push its deadline)."""
        reply = await self._upload_script(
            self._touch_upload,
            namespace,
            upload_id,
            [resume_ttl * 1000, owner, "1" if renew else "0"],
            idempotent=True,
        )
        _check(reply)
        return _seconds(reply[1])

    async def detach_upload(
        self,
        namespace: str,
        upload_id: str,
        owner: str,
        *,
        resume_ttl: int,
        renew: bool,
        chunks: int,
        tail: str,
        tail_len: int,
        tail_sha1: bytes,
        keep_owner: bool = False,
    ) -> Recorded:
        """Leave the upload for a RESUME, with its partial last chunk ``tail``;
        with ``keep_owner``, record the tail and stay its owner (a tus checkpoint)."""
        reply = await self._upload_script(
            self._detach_upload,
            namespace,
            upload_id,
            [
                *(resume_ttl * 1000, owner, "1" if renew else "0", chunks),
                *(tail, tail_len, tail_sha1, "1" if keep_owner else "0"),
            ],
            # Not retried: run twice, the second finds no owner and says superseded,
            # and the caller would drop a tail the first run recorded.
            idempotent=False,
        )
        _check(reply)
        return Recorded(_seconds(reply[1]), _text(reply[2]), bool(int(reply[3])))

    async def discard_upload(
        self, namespace: str, upload_id: str, owner: str
    ) -> tuple[int, str] | None:
        """Forget the upload if ``owner`` ('': anyone) has it: (chunks, tail) to unlink."""
        reply = await self._upload_script(
            self._discard_upload, namespace, upload_id, [0, owner], idempotent=True
        )
        if not reply:
            return None
        return int(reply[0]), _text(reply[1])

    async def commit_resumable(
        self,
        namespace: str,
        info: FileInfo,
        ttl: int,
        upload_id: str,
        owner: str,
        *,
        if_absent: bool = False,
    ) -> bool:
        """COMMIT, by the upload's owner only, dropping the upload's state in the same
        step; with ``if_absent`` only when the key has no file (else FileExists).
        True when it replaced a file."""
        ns = keys.NamespaceKeys(namespace)
        stored, sealed = self.sealer.stored_forms(namespace, info)
        names = [
            ns.meta(info.key),
            ns.index,
            ns.expiry_index,
            ns.upload(upload_id),
            ns.upload_digests(upload_id),
            ns.uploads,
            ns.events,  # the commit's change event, in the same step (decision 0011)
        ]
        args = [
            *commit_args(ns, info, stored, ttl, if_absent),
            owner,
            upload_id,
            *self.events.publish_args(stored_event(info, sealed)),
        ]
        return await self._run_commit(self._commit_resumable, names, args)

    # Defined by Store.
    events: EventLog
    sealer: Sealer

    async def run(
        self, op: Callable[[], Awaitable[T]], *, idempotent: bool, kind: str = "meta"
    ) -> T:
        raise NotImplementedError

    async def release(self, info: FileInfo) -> None:
        raise NotImplementedError

    async def _run_commit(self, script: Any, names: list[Any], args: list[Any]) -> bool:
        raise NotImplementedError


def _check(reply: Any) -> None:
    """Raise for a script's {why not} answer."""
    status = _text(reply[0])
    if status == "ok":
        return
    if status == SUPERSEDED:
        raise Superseded("another connection resumed this upload")
    if status == GONE:
        raise Superseded("the resumable upload expired or was discarded")
    raise StorageError(f"resumable upload state: {status}")  # our bug, reported as internal
