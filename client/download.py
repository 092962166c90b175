"""One ``get()`` that may take several connections (docs/protocol.md section 6.2).

A download that breaks goes on from the bytes already written: a range GET
from there, pinned to the ``version`` the first reply named, so two versions
of a key can never be spliced into one file. Each range is checked against
its END; the whole file's SHA-1, computed over every byte written, must
equal the ``sha1`` of the first reply before the sink commits (the atomic
rename of a path). When the version is gone by then (replaced or deleted,
and past the server's grace), :class:`~client.errors.NotFound` says so and
the sink keeps nothing.

Only a whole-file download resumes this way: a range's bytes before the
break were never checked by an END, and no whole-file digest covers them.
Ranges, and servers without ``versions``, start again from their first byte
(:func:`client.transfer.download`), as before.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .connection import Connection
from .errors import (
    BadRange,
    Corrupt,
    IntegrityError,
    NotFound,
    ProtocolError,
    TransientError,
    ValiseError,
)
from .files import Sink
from .transfer import Progress, download, features, receive, reply_length, verify_download
from .wire import FrameType

__all__ = ["Download"]


class Download:
    """The attempts of one download: :meth:`attempt` per connection, :meth:`may_retry` between."""

    def __init__(self, body: dict[str, Any], sink: Sink, progress: Progress | None) -> None:
        self.body = body
        self.sink = sink
        self.progress = progress
        #: The first reply (file info, offset, length) while the download may resume.
        self.info: dict[str, Any] | None = None
        #: Bytes written to the sink under ``info``, and their SHA-1.
        self.got = 0
        self._whole = hashlib.sha1()

    @property
    def version(self) -> str | None:
        version = (self.info or {}).get("version")
        return version if isinstance(version, str) else None

    def _resumable(self) -> bool:
        return self.version is not None and "offset" not in self.body and "length" not in self.body

    async def attempt(self, conn: Connection) -> dict[str, Any]:
        if self.info is not None and self.got > 0 and self._resumable():
            return await self._resume(conn)
        self.info = None
        if "versions" not in features(conn) or not {"offset", "length"}.isdisjoint(self.body):
            return await download(conn, self.body, self.sink, self.progress)
        self.got = 0
        self._whole = hashlib.sha1()
        await conn.send_control(FrameType.GET, self.body)
        info = await conn.read_reply()
        total = reply_length(info)
        self.sink.start()
        self.info = info
        if self.progress is not None:
            self.progress(0, total)
        await self._stream(conn, info, self.body, total)
        return info

    async def _resume(self, conn: Connection) -> dict[str, Any]:
        info = self.info
        assert info is not None
        body = {"key": self.body["key"], "offset": self.got, "version": self.version}
        await conn.send_control(FrameType.GET, body)
        try:
            reply = await conn.read_reply()
        except (NotFound, BadRange) as exc:
            # bad_range: the offset lies within the pinned version by construction,
            # so a server that judged it against another version no longer has ours.
            raise NotFound(
                f"version {self.version} is gone (replaced or deleted since the download "
                f"began, after {self.got} bytes); nothing was kept",
                fatal=exc.fatal,
            ) from None
        total = reply_length(info)
        if reply.get("offset") != self.got or reply_length(reply) != total - self.got:
            raise ProtocolError("resumed GET reply names another range than the one asked")
        if self.progress is not None:
            self.progress(self.got, total)
        await self._stream(conn, reply, body, total)
        return info

    async def _stream(
        self, conn: Connection, reply: dict[str, Any], body: dict[str, Any], total: int
    ) -> None:
        """DATA into the sink until END; the range's END, then the whole file, checked."""
        expected = reply_length(reply)
        # From byte 0 the range is the whole file so far: one SHA-1 serves both
        # END and the whole-file check. A resumed range has its own for END.
        first = self.got == 0

        def take(payload: memoryview) -> None:
            if not first:
                self._whole.update(payload)
            self.sink.write(payload)
            self.got += len(payload)
            if self.progress is not None:
                self.progress(self.got, total)

        received, sha1, digest = await receive(conn, expected, take, self._whole if first else None)
        verify_download(reply, body, received, expected, sha1, digest)
        assert self.info is not None
        stored = self.info.get("sha1")
        actual = self._whole.hexdigest()
        if self.got != total or not isinstance(stored, str) or stored.lower() != actual:
            raise IntegrityError(
                "SHA-1 of the whole file differs from the stored sha1",
                fields={"expected": stored, "actual": actual, "received": self.got},
            )
        self.sink.commit()

    def may_retry(self, exc: ValiseError) -> bool:
        """Transient failures go on from the bytes written; integrity ones start over, once."""
        if isinstance(exc, (IntegrityError, Corrupt)):
            self.info = None
            return self.sink.restartable
        if not isinstance(exc, TransientError):
            return False
        if self.info is not None and self._resumable():
            return True
        self.info = None
        return self.sink.restartable
