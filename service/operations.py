"""What a client may ask of Valise, whatever door it came in by.

The binary connection (and any other door) translates its wire into these
few operations and translates their results and our errors back. Rules that
must hold on every door live here, once: authentication and its failure
delay, namespaces, write permission, the TTL default, the storage checks
before an upload starts. Failures are :class:`~protocol.errors.ProtocolError`
(or a storage error); each carries its wire code, which a door maps to its
own way of saying it. Fatality is the binary door's notion: a door without
it reads only ``code`` and ``message``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from protocol.errors import ErrorCode, ProtocolError
from service.attachments import Attachment
from service.auth import OPEN, Grant
from service.state import ServerState
from service.subscription import Subscription
from storage import (
    ChunkWriter,
    Download,
    FileInfo,
    ResumableWriter,
    StorageError,
    TooManyUploads,
    open_download,
)
from storage.errors import FileNotFound
from storage.resumable import NOT_FOUND
from storage.tus import TUS_PREFIX, TusWriter

#: A resumable upload's writer, of either door.
W = TypeVar("W", bound=ResumableWriter)

log = logging.getLogger("valise")


class Operations:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store
        self.config = state.config
        self.metrics = state.metrics
        #: This door's resumable uploads in progress, as the process knows them.
        self._attached: dict[ChunkWriter, Attachment] = {}

    @property
    def authenticating(self) -> bool:
        """True when every client must authenticate before anything else."""
        return self.state.tokens is not None

    async def authenticate(self, token: str | None, subject: str | None, address: str) -> Grant:
        """The grant of ``token`` (or of a verified certificate's ``subject``).

        A failure waits a delay that grows with the failures from ``address``
        before it raises ``unauthorized`` (fatal), so guessing is slow.
        """
        tokens = self.state.tokens
        if tokens is None:
            return OPEN  # no authentication: a token, if any, is ignored
        grant = tokens.check(token) if token is not None else tokens.check_subject(subject)
        failures = self.state.auth_failures
        credential = token if token is not None else f"subject:{subject}"
        if grant is None:
            delay = failures.failed(address, credential)
            log.warning("authentication failed (%d in all)", failures.failures_total)
            await asyncio.sleep(delay)
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "unknown token", fatal=True)
        failures.succeeded(address, credential)
        return grant

    @staticmethod
    def require_write(grant: Grant, *, fatal: bool) -> None:
        if not grant.writable:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this token may not write", fatal=fatal)

    async def put(
        self,
        grant: Grant,
        key: str,
        *,
        size: int | None,
        ttl: int | None,
        content_type: str | None,
        resumable: bool = False,
        if_absent: bool = False,
    ) -> ChunkWriter:
        """Start an upload: the chunk writer to feed, then :meth:`commit` or :meth:`leave`.

        A resumable one (docs/protocol.md section 6.1) is a :class:`ResumableWriter`;
        on a server that does not offer ``resume`` the flag is ignored, as the
        protocol says of a feature's fields. With ``if_absent`` the commit
        publishes only when the key has no file at that moment, in the same
        atomic step (section 6.4).
        """
        self.require_write(grant, fatal=True)
        await self.store.check_writable(size)
        ttl = ttl or self.config.default_ttl
        if not resumable or "resume" not in self.state.features:
            return ChunkWriter(
                self.store,
                grant.namespace,
                key,
                ttl=ttl,
                content_type=content_type,
                if_absent=if_absent,
            )
        started = ResumableWriter.create(
            self.store,
            grant.namespace,
            key,
            ttl=ttl,
            content_type=content_type,
            size=size,
            max_open=self.config.max_resumable,
            if_absent=if_absent,
        )
        return await self._started(grant, started)

    async def put_tus(
        self,
        grant: Grant,
        key: str,
        *,
        size: int,
        ttl: int | None,
        content_type: str | None,
        tus: dict[str, str],
    ) -> TusWriter:
        """Start a tus upload (docs/http.md section 7): a resumable upload, whose
        id only the tus routes take; ``busy`` past --max-resumable."""
        self.require_write(grant, fatal=False)
        if "resume" not in self.state.features:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "resumable uploads are off", fatal=False)
        await self.store.check_writable(size)
        started = TusWriter.start(
            self.store,
            grant.namespace,
            key,
            ttl=ttl or self.config.default_ttl,
            content_type=content_type,
            size=size,
            max_open=self.config.max_resumable,
            tus=tus,
        )
        return await self._started(grant, started)

    async def _started(self, grant: Grant, starting: Awaitable[tuple[W, int]]) -> W:
        """A resumable upload being created (either door): counted, and attached."""
        try:
            writer, expired = await starting
        except TooManyUploads:
            self.metrics.resumable_event("refused")
            raise
        self.metrics.resumable_event("expired", expired)
        self.metrics.resumable_event("started")
        self._attach(grant, writer)
        return writer

    async def resume(self, grant: Grant, upload_id: str, *, tus: bool = False) -> ResumableWriter:
        """Take a resumable upload over (RESUME): ``not_found``, ``forbidden``, a
        storage error, or the writer, its running SHA-1 rebuilt, at ``writer.size``.

        A connection of this process that holds the upload is stopped first,
        and what it had read is stored, so the offset counts it too. A tus
        upload is resumed only with ``tus`` (a :class:`TusWriter`), and never
        by the binary door.
        """
        self.require_write(grant, fatal=False)
        if upload_id.startswith(TUS_PREFIX) != tus:
            raise FileNotFound(NOT_FOUND)
        kind = TusWriter if tus else ResumableWriter
        slot = (grant.namespace, upload_id)
        async with self.state.attachments.handover(slot, wait=self.config.storage_timeout):
            writer = await kind.resume(self.store, grant.namespace, upload_id)
            remaining = None if writer.declared is None else writer.declared - writer.size
            try:
                await self.store.check_writable(remaining)
            except StorageError:
                await writer.detach()
                raise
            self._attach(grant, writer)
        self.metrics.resumable_event("resumed")
        self.metrics.resume_saved.inc(writer.resumed_from)
        return writer

    def _attach(self, grant: Grant, writer: ResumableWriter) -> None:
        attachment = self.state.attachments.attach((grant.namespace, writer.upload_id))
        # Lost to a RESUME on another server (found at a chunk write): stop too.
        writer.on_lost = attachment.want
        self._attached[writer] = attachment

    def _release(self, writer: ChunkWriter) -> None:
        attachment = self._attached.pop(writer, None)
        if attachment is not None:
            self.state.attachments.release(attachment)

    def wanted(self, writer: ChunkWriter) -> asyncio.Future[None] | None:
        """Done when another connection resumes ``writer``'s upload: one of this
        process at once, one elsewhere once the writer finds out."""
        attachment = self._attached.get(writer)
        return None if attachment is None else attachment.wanted

    async def commit(self, writer: ChunkWriter, size: int, sha1: str) -> FileInfo:
        """END: check the whole file's SHA-1 and make it the key's file, atomically;
        a create-only upload (``put(if_absent=True)``) only when the key has no
        file at that moment, else ``exists`` and nothing is stored."""
        try:
            info = await writer.commit(size, sha1)
        finally:
            self._release(writer)
        if isinstance(writer, ResumableWriter):
            self.metrics.resumable_event("completed")
        return info

    async def leave(self, writer: ChunkWriter, *, keep: bool, unread: bytes = b"") -> None:
        """The upload ends without a commit. A resumable one is kept for a RESUME
        when ``keep`` (its connection ended, however: ``unread`` is a DATA frame
        cut off midway), else discarded (ABORT, a size mismatch)."""
        try:
            if keep and isinstance(writer, ResumableWriter):
                await writer.detach(unread)
            else:
                await writer.abort()
        finally:
            self._release(writer)

    async def drop(self, writer: TusWriter) -> None:
        """Forget a tus writer, recording nothing more: Valkey keeps the upload
        as its last checkpoint left it (a PATCH whose checksum failed)."""
        try:
            await writer.forget()
        finally:
            self._release(writer)

    async def exists(self, grant: Grant, key: str) -> bool:
        """True when the key has a file (one small read: no file info is parsed)."""
        return await self.store.current_vid(grant.namespace, key) is not None

    async def get(
        self,
        grant: Grant,
        key: str,
        offset: int | None,
        length: int | None,
        version: str | None = None,
    ) -> Download:
        """A download of ``key``; with ``version``, of that version or ``not_found``.

        A replaced version's chunks live on for ``grace``, but its file info
        does not, so only the current version can be streamed: a client
        resuming a download of a version that has since been replaced gets
        ``not_found`` and never a splice of two versions (section 6.2).
        """
        return await open_download(self.store, grant.namespace, key, offset, length, version)

    async def stat(self, grant: Grant, key: str) -> FileInfo:
        return await self.store.stat(grant.namespace, key)

    async def delete(self, grant: Grant, key: str) -> bool:
        self.require_write(grant, fatal=False)
        return await self.store.delete(grant.namespace, key)

    async def list(
        self, grant: Grant, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[FileInfo], str | None]:
        return await self.store.list(grant.namespace, prefix, cursor, limit)

    async def subscribe(self, grant: Grant, prefix: str, since: str | None) -> Subscription:
        """Change events of the grant's namespace under ``prefix`` (section 6.3).

        Any grant may subscribe: a read-only token may read.
        """
        return await self.state.events.subscribe(grant.namespace, prefix, since)
