"""One ``put()`` that may take several connections (docs/protocol.md section 6.1).

:class:`Upload` is the state that outlives a connection: the ``upload_id``
the server gave the resumable PUT. Each attempt runs on a fresh connection
(:meth:`client.aio.AsyncClient._call` reconnects and waits, with backoff):
the first sends ``PUT {"resumable": true}``, every later one ``RESUME`` and
streams the file from the server's ``offset``. The bytes below ``offset``
are read again locally, only to hash them: END carries the SHA-1 of the
whole file and the server checks it, so bytes spliced wrongly on either side
can never be stored.

Resumable is chosen per upload, at its first attempt: always
(``resumable=True``: :class:`~client.errors.Unsupported` from a server
without ``resume``), never (``False``: the revision-1 upload), or, with
``None``, when it helps: the server offers ``resume``, the file is larger
than the server's ``chunk_size`` (HELLO) and the source can be read again
(a path, bytes, a seekable stream).
"""

from __future__ import annotations

import hashlib
from typing import Any

from .connection import Connection
from .errors import (
    IntegrityError,
    NotFound,
    ProtocolError,
    TransientError,
    ValiseError,
)
from .files import Source
from .transfer import (
    Progress,
    begin_upload,
    features,
    require_feature,
    send_body,
    upload,
)
from .wire import FrameType

__all__ = ["Upload"]


def _int(reply: dict[str, Any], name: str) -> int:
    value = reply.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError(f"RESUME reply without a non-negative integer {name!r}")
    return value


class Upload:
    """The attempts of one upload: :meth:`attempt` per connection, :meth:`may_retry` between."""

    def __init__(
        self,
        key: str | None,
        src: Source,
        *,
        ttl: int | None = None,
        content_type: str | None = None,
        size: int | None = None,
        progress: Progress | None = None,
        if_absent: bool = False,
        resumable: bool | None = False,
        upload_id: str | None = None,
    ) -> None:
        self.key = key
        self.src = src
        self.ttl = ttl
        self.content_type = content_type
        self.size = size
        self.progress = progress
        self.if_absent = if_absent
        self.mode = True if upload_id is not None else resumable
        #: The server's handle on the upload once a resumable PUT was accepted.
        self.upload_id = upload_id
        #: Whether this upload is resumable (decided by the first attempt).
        self.resumable: bool | None = True if upload_id is not None else None
        self._resuming = False

    # -- one attempt, on one connection ---------------------------------------

    async def attempt(self, conn: Connection) -> dict[str, Any]:
        if self.upload_id is not None:
            return await self._resume(conn)
        if self.resumable is None:
            self.resumable = self._wanted(conn)
        if not self.resumable:
            assert self.key is not None
            return await upload(
                conn,
                self.key,
                self.src,
                self.ttl,
                self.content_type,
                self.size,
                self.progress,
                self.if_absent,
            )
        return await self._put(conn)

    def _wanted(self, conn: Connection) -> bool:
        if self.mode is False:
            return False
        if self.mode is True:
            require_feature(conn, "resume", "a resumable upload")
            return True
        if "resume" not in features(conn) or not self.src.rereadable:
            return False
        chunk = (conn.hello_reply or {}).get("chunk_size")
        declared = self.size if self.size is not None else self.src.start()
        return isinstance(chunk, int) and declared is not None and declared > chunk

    async def _put(self, conn: Connection) -> dict[str, Any]:
        assert self.key is not None
        reply, declared = await begin_upload(
            conn,
            self.key,
            self.src,
            self.ttl,
            self.content_type,
            self.size,
            self.progress,
            self.if_absent,
            resumable=True,
        )
        upload_id = reply.get("upload_id")
        if reply.get("resumable") is True and isinstance(upload_id, str):
            self.upload_id = upload_id
        return await send_body(conn, self.src, hashlib.sha1(), 0, declared, self.progress)

    async def _resume(self, conn: Connection) -> dict[str, Any]:
        require_feature(conn, "resume", "resuming an upload")
        self._resuming = True
        await conn.send_control(FrameType.RESUME, {"upload_id": self.upload_id})
        reply = await conn.read_reply()
        self._resuming = False
        offset = _int(reply, "offset")
        size = reply.get("size")
        declared = size if isinstance(size, int) and not isinstance(size, bool) else self.size
        self.src.start()
        sha1 = hashlib.sha1()
        if self.src.skip(offset, sha1) < offset:
            await conn.send_control(FrameType.ABORT, None)
            await conn.read_reply()
            self.upload_id = None
            error = IntegrityError(
                f"the server holds {offset} bytes of this upload, more than the local file "
                "now has: it changed during the upload",
            )
            error.permanent = True
            raise error
        if self.progress is not None:
            self.progress(offset, declared)
        return await send_body(conn, self.src, sha1, offset, declared, self.progress)

    # -- between attempts ---------------------------------------------------------

    def may_retry(self, exc: ValiseError) -> bool:
        """Whether to try again, and from where: the server's offset, or a fresh upload.

        ``not_found`` answering RESUME means the upload expired (or was
        committed by an attempt whose reply was lost): a fresh upload, which
        counts as a retry. A mismatch at END ends a resumable upload too
        (section 6.1): the one retry allowed for integrity starts afresh.
        """
        resuming, self._resuming = self._resuming, False
        if isinstance(exc, NotFound) and resuming:
            if self.key is None:
                return False  # resume(upload_id): nothing to start again from
            self.upload_id = None
            return self.src.rereadable
        if isinstance(exc, IntegrityError) and not exc.permanent:
            self.upload_id = None
            if self.key is None:
                return False  # resume(upload_id): the server discarded it, no key to start anew
        ok = isinstance(exc, (TransientError, IntegrityError))
        if not ok:
            return False
        if self.upload_id is not None:
            return self.src.rereadable
        return self.src.rereadable or not self.src.consumed
