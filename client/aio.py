"""Asynchronous Valise client (docs/protocol.md section 2).

One connection, requests one at a time (an internal lock serialises concurrent
callers). Files stream in frames: memory stays at a few frames whatever the
file size (while a download streams, the receive buffer holds up to four).
Every call retries with bounded, jittered backoff when that is safe: see
:meth:`AsyncClient._call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_mod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from . import greeting
from .backoff import full_jitter
from .connection import Connection
from .download import Download
from .errors import (
    Exists,
    IntegrityError,
    ProtocolError,
    TransientError,
    ValiseError,
)
from .files import GetDest, PutSource, Sink, Source
from .resumable import Upload
from .transfer import Progress
from .wire import DEFAULT_PORT, FrameType

__all__ = ["DEFAULT_PORT", "AsyncClient", "Progress"]

T = TypeVar("T")


def _transient(exc: ValiseError) -> bool:
    return isinstance(exc, TransientError)


@contextlib.contextmanager
def _about(key: str) -> Iterator[None]:
    """Name ``key`` in the errors that are about it (not in those about the connection)."""
    try:
        yield
    except ValiseError as exc:
        if exc.key is None and not isinstance(exc, TransientError):
            exc.key = key
        raise


class AsyncClient:
    """Client for one Valise server.

    ``timeout`` bounds connecting and every single read or write (not a whole
    transfer). ``retries`` is how many times a failed call is tried again.
    HELLO is sent on every new connection when a ``token`` is given or
    ``hello`` is true (the default), so reconnecting after a fatal ERROR
    needs nothing from the caller.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        client_name: str = "valise-python",
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        ssl: ssl_mod.SSLContext | None = None,
        hello: bool = True,
        on_retry: Callable[[ValiseError, int, float], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._ssl = ssl
        #: Told (error, attempt, seconds to wait) before each retry's wait.
        self.on_retry = on_retry
        self._token = token
        self._client_name = client_name
        self._send_hello = hello or token is not None
        self._conn: Connection | None = None
        # Made on first use, inside the loop: before Python 3.10 a Lock binds
        # to the loop current when it is built (and, in a thread without
        # one, cannot be built at all), which ``Client`` does not run on.
        self._lock_: asyncio.Lock | None = None
        #: The last HELLO reply (``max_frame``, ``max_file_size``, ...).
        self.server_info: dict[str, Any] | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def _lock(self) -> asyncio.Lock:
        if self._lock_ is None:
            self._lock_ = asyncio.Lock()
        return self._lock_

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    # -- connection and retries ------------------------------------------

    async def _connection(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await Connection.open(self.host, self.port, io_timeout=self.timeout, ssl=self._ssl)
        try:
            if self._send_hello:
                await self._greet(conn)
        except BaseException:
            conn.abort()
            raise
        self._conn = conn
        return conn

    async def _greet(self, conn: Connection) -> dict[str, Any]:
        try:
            await conn.send_control(FrameType.HELLO, greeting.body(self._client_name, self._token))
            reply = await conn.read_reply()
        except ValiseError as exc:
            tls, heard = self._ssl is not None, conn.received_anything
            greeting.explain(exc, token=self._token is not None, tls=tls, heard=heard)
            raise
        max_frame = reply.get("max_frame")
        if isinstance(max_frame, int) and not isinstance(max_frame, bool):
            conn.set_max_frame(max_frame)
        conn.hello_reply = reply
        self.server_info = reply
        return reply

    def _delay(self, attempt: int) -> float:
        return full_jitter(attempt, self.backoff, self.max_backoff)

    async def _call(
        self,
        op: Callable[[Connection], Awaitable[T]],
        may_retry: Callable[[ValiseError], bool] = _transient,
    ) -> T:
        """Run ``op`` on the connection, retrying while ``may_retry`` agrees.

        The connection is dropped after a fatal ERROR and after anything that
        leaves its state unknown (client-side errors, cancellation); the next
        call reconnects. Integrity failures are retried at most once.
        """
        attempt = 0
        integrity_retried = False
        while True:
            try:
                async with self._lock:
                    conn = await self._connection()
                    try:
                        return await op(conn)
                    except ValiseError as exc:
                        if exc.fatal:
                            conn.abort()
                        raise
                    except BaseException:
                        conn.abort()
                        raise
            except ValiseError as exc:
                if attempt >= self.retries or exc.permanent or not may_retry(exc):
                    raise
                if isinstance(exc, IntegrityError):
                    if integrity_retried:
                        raise
                    integrity_retried = True
                attempt += 1
                delay = self._delay(attempt)
                if self.on_retry is not None:
                    self.on_retry(exc, attempt, delay)
            await asyncio.sleep(delay)

    async def _request(self, ftype: FrameType, body: dict[str, Any]) -> dict[str, Any]:
        async def op(conn: Connection) -> dict[str, Any]:
            await conn.send_control(ftype, body)
            return await conn.read_reply()

        return await self._call(op)

    # -- simple requests ---------------------------------------------------

    async def hello(self, client: str | None = None, token: str | None = None) -> dict[str, Any]:
        """Send HELLO (now and on every reconnect); returns the server's reply."""
        changed = (client is not None and client != self._client_name) or (
            token is not None and token != self._token
        )
        if client is not None:
            self._client_name = client
        if token is not None:
            self._token = token
        self._send_hello = True
        async with self._lock:
            if changed and self._conn is not None and self._conn.hello_reply is not None:
                # HELLO opens a connection: new credentials need a new one.
                await self._conn.aclose()
                self._conn = None

        async def op(conn: Connection) -> dict[str, Any]:
            if conn.hello_reply is None:
                return await self._greet(conn)
            return conn.hello_reply

        return await self._call(op)

    async def ping(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """PING: the server echoes ``payload``."""
        return await self._request(FrameType.PING, dict(payload or {}))

    async def stat(self, key: str) -> dict[str, Any]:
        """File info of ``key``; raises :class:`~client.errors.NotFound`."""
        with _about(key):
            return await self._request(FrameType.STAT, {"key": key})

    async def delete(self, key: str) -> bool:
        """Delete ``key``; whether a file was there."""
        with _about(key):
            reply = await self._request(FrameType.DELETE, {"key": key})
        deleted = reply.get("deleted")
        if not isinstance(deleted, bool):
            raise ProtocolError("DELETE reply without a boolean 'deleted'")
        return deleted

    async def list(
        self, prefix: str = "", limit: int | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """File info of every stored key starting with ``prefix``, in key order.

        Follows the cursor over all pages; ``limit`` is the page size asked
        of the server (it caps it at 1000), not a total.
        """
        cursor: str | None = None
        while True:
            body: dict[str, Any] = {"prefix": prefix}
            if cursor is not None:
                body["cursor"] = cursor
            if limit is not None:
                body["limit"] = limit
            page = await self._request(FrameType.LIST, body)
            files = page.get("files")
            next_cursor = page.get("cursor")
            if not isinstance(files, list) or not (
                next_cursor is None or isinstance(next_cursor, str)
            ):
                raise ProtocolError("LIST reply needs 'files' (list) and 'cursor' (str|null)")
            for info in files:
                yield info
            if next_cursor is None:
                return
            cursor = next_cursor

    # -- transfers -------------------------------------------------------

    async def put(
        self,
        key: str,
        source: PutSource,
        *,
        ttl: int | None = None,
        content_type: str | None = None,
        size: int | None = None,
        progress: Progress | None = None,
        if_absent: bool = False,
        resumable: bool | None = False,
    ) -> dict[str, Any]:
        """Upload ``source`` (a path, bytes, or a binary stream) to ``key``.

        ``resumable=True`` makes a resumable upload (docs/protocol.md 6.1):
        a retry RESUMEs from the server's offset instead of byte 0; ``None``
        does so when the server offers ``resume`` and the file is larger than
        one chunk (:mod:`client.resumable`).

        Streams DATA frames while computing SHA-1, ends with END(digest) and
        returns the stored file info. ``size``, when not given, is declared
        for paths and bytes so the server can refuse a too large file early.
        Retried (from the first byte) only for paths and bytes, or for a
        stream nothing was read from yet.

        ``if_absent=True`` never replaces a file: :class:`~client.errors.Exists`
        when ``key`` holds one (the stored file unchanged), and
        :class:`~client.errors.Unsupported`, before anything is sent, from a
        server whose HELLO does not list the ``if_absent`` feature. When a
        retry meets ``exists`` after an earlier attempt sent its END (the reply
        was lost), the stored file is ours if its SHA-1 and size are the ones
        sent: then its info is returned.
        """
        src = Source(source)
        job = Upload(key, src, ttl=ttl, content_type=content_type, size=size, progress=progress)
        job.if_absent, job.mode = if_absent, resumable
        try:
            with _about(key):
                return await self._call(job.attempt, job.may_retry)
        except TransientError as exc:
            exc.upload_id = job.upload_id  # retries ran out: the caller may resume later
            raise
        except Exists as exists:
            earlier = [(sha1, n) for attempt, sha1, n in src.ended if attempt < src.attempt]
            if not earlier:
                raise
            try:
                info = await self.stat(key)
            except ValiseError:
                raise exists from None
            if (info.get("sha1"), info.get("size")) not in earlier:
                raise
            return info
        finally:
            src.close()

    async def resume(
        self, upload_id: str, source: PutSource, *, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Finish the resumable upload ``upload_id`` with ``source``, the same file, from byte 0.

        Only the bytes past the server's ``offset`` are sent; :class:`~client.errors.NotFound`
        when the upload is gone (expired, committed, aborted; docs/protocol.md 6.1).
        """
        src = Source(source)
        job = Upload(None, src, progress=progress, upload_id=upload_id)
        try:
            return await self._call(job.attempt, job.may_retry)
        finally:
            src.close()

    async def get(
        self,
        key: str,
        dest: GetDest,
        *,
        offset: int | None = None,
        length: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Download ``key`` (or a range of it) into ``dest`` (a path or a binary stream).

        Verifies the END digest against the SHA-1 of the bytes received and,
        for the whole file, against the stored ``sha1``; raises
        :class:`~client.errors.IntegrityError` otherwise. A path is written
        atomically and left untouched on any failure. Returns the OK info
        (file info plus ``offset`` and ``length``). A broken whole-file
        download resumes from the bytes written, pinned to its version
        (:mod:`client.download`).
        """
        sink = Sink(dest)
        body: dict[str, Any] = {"key": key}
        if offset is not None:
            body["offset"] = offset
        if length is not None:
            body["length"] = length
        sink.check()
        job = Download(body, sink, progress)
        try:
            with _about(key):
                return await self._call(job.attempt, job.may_retry)
        finally:
            sink.abort()
