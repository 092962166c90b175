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

from protocol.errors import ErrorCode, ProtocolError
from service.auth import OPEN, Grant
from service.state import ServerState
from service.subscription import Subscription
from storage import ChunkWriter, Download, FileInfo, open_download

log = logging.getLogger("valise")


class Operations:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.store = state.store
        self.config = state.config

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
    ) -> ChunkWriter:
        """Start an upload: the chunk writer to feed, then commit or abort."""
        self.require_write(grant, fatal=True)
        await self.store.check_writable(size)
        return ChunkWriter(
            self.store,
            grant.namespace,
            key,
            ttl=ttl or self.config.default_ttl,
            content_type=content_type,
        )

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
        download = await open_download(self.store, grant.namespace, key, offset, length)
        if version is not None and download.info.vid != version:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, "that version of the file is no longer stored", fatal=False
            )
        return download

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
