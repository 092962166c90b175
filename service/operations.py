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
import weakref
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from service.auth import OPEN, Grant
from service.state import ServerState
from storage.info import FileInfo
from storage.reader import Download, open_download
from storage.writer import ChunkWriter

log = logging.getLogger("valise")

#: Create-only commits in progress, per (namespace, key), in this process.
_CREATING: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)


class Exists(Exception):
    """A create-only upload found a file under its key (docs/protocol.md section 6.4)."""

    code = "exists"

    def __init__(self) -> None:
        self.message = "the key already has a file"
        self.extra: dict[str, Any] = {}
        super().__init__(self.message)


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

    async def commit(
        self, grant: Grant, upload: ChunkWriter, size: int, sha1: str, *, if_absent: bool = False
    ) -> FileInfo:
        """Make an upload visible when its SHA-1 is ``sha1``; with ``if_absent``, only
        when the key has no file (else :class:`Exists`, and nothing is stored).

        The create-only check is not yet in the storage layer's atomic commit:
        it is made just before the commit, under a lock that orders the
        create-only uploads of one key in this process. A plain upload, or
        another server process, committing between the check and the commit
        can still be overwritten.
        """
        if not if_absent:
            return await upload.commit(size, sha1)
        lock = _CREATING.setdefault((grant.namespace, upload.key), asyncio.Lock())
        async with lock:
            try:
                if await self.exists(grant, upload.key):
                    raise Exists
            except BaseException:
                await upload.abort()
                raise
            return await upload.commit(size, sha1)

    async def exists(self, grant: Grant, key: str) -> bool:
        """True when the key has a file (one small read: no file info is parsed)."""
        return await self.store.current_vid(grant.namespace, key) is not None

    async def get(self, grant: Grant, key: str, offset: int | None, length: int | None) -> Download:
        return await open_download(self.store, grant.namespace, key, offset, length)

    async def stat(self, grant: Grant, key: str) -> FileInfo:
        return await self.store.stat(grant.namespace, key)

    async def delete(self, grant: Grant, key: str) -> bool:
        self.require_write(grant, fatal=False)
        return await self.store.delete(grant.namespace, key)

    async def list(
        self, grant: Grant, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[FileInfo], str | None]:
        return await self.store.list(grant.namespace, prefix, cursor, limit)
