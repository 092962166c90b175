"""A tus request's body into its upload: what is kept, what is dropped, the commit.

- Every PATCH (and a POST that uploads) streams into the upload's chunk
  writer as it arrives, a piece at a time: memory is the writer's chunks.
- A request that ends early, however (the client went away, a stall, the
  rate floor, another request taking the upload over), keeps every byte the
  server read: the writer checkpoints them, and HEAD reports them (tus:
  "store as much of the received data as possible").
- With ``Upload-Checksum``, the request's chunks are held back until its
  bytes are verified; a mismatch, or an end before the last byte, drops
  exactly those bytes (460, or nothing to answer), and the offset stays
  where the request found it. Nothing unverified is ever appended.
- The byte that reaches ``Upload-Length`` commits the file: its whole-file
  SHA-1 against the ``sha1`` metadata when given (a mismatch discards the
  upload: 409), then atomically under its key, with its change event.
"""

from __future__ import annotations

import asyncio
import hashlib

from protocol.errors import ErrorCode, ProtocolError
from service.http import headers as h
from service.http.errors import HttpError
from service.http.exchange import Exchange, Header
from service.http.files import pour, version_headers
from service.operations import Operations
from service.parked import Entry
from service.peer import read_unless
from storage.tus import TusWriter


def _superseded() -> ProtocolError:
    return ProtocolError(ErrorCode.SUPERSEDED, "another request took this upload over", fatal=False)


class Appender:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    @staticmethod
    def check_length(ex: Exchange, offset: int, declared: int) -> None:
        """A declared body that would go past ``Upload-Length``: 413, before a byte is read."""
        size = ex.content_length
        if size is not None and offset + size > declared:
            raise HttpError(413, ErrorCode.TOO_LARGE, "the body goes past Upload-Length")

    async def append(self, ex: Exchange, entry: Entry, checksum: bytes | None) -> list[Header]:
        """Append the body to the entry's writer; the response's tus fields."""
        writer, ops = entry.writer, entry.ops
        assert writer is not None
        assert ops is not None
        assert writer.declared is not None
        start = writer.size
        digest = hashlib.sha1(usedforsecurity=False) if checksum is not None else None
        if checksum is not None:
            writer.hold()
        stops = [entry.reading(), ops.wanted(writer)]
        try:
            await self._receive(ex, writer, digest, writer.declared - start, stops)
            if digest is not None:
                if digest.digest() != checksum:
                    assert checksum is not None
                    entry.clear()
                    await ops.drop(writer)
                    raise HttpError(
                        460,
                        ErrorCode.CHECKSUM_MISMATCH,
                        "Upload-Checksum does not match this request's bytes: they were dropped",
                        headers=(("Upload-Offset", str(start)),),
                        expected=checksum.hex(),
                        actual=digest.hexdigest(),
                    )
                await writer.release()
        except HttpError as exc:
            if exc.status != 460:
                await self._interrupted(entry, checked=digest is not None)
            raise
        except BaseException:
            await self._interrupted(entry, checked=digest is not None)
            raise
        if writer.size == writer.declared:
            return await self._commit(entry, writer, ops)
        await writer.checkpoint()
        writer.trim()
        return [
            ("Upload-Offset", str(writer.size)),
            ("Upload-Expires", h.http_date(writer.deadline)),
        ]

    async def _receive(
        self,
        ex: Exchange,
        writer: TusWriter,
        digest: hashlib._Hash | None,
        limit: int,
        stops: list[asyncio.Future[None] | None],
    ) -> None:
        too_large = ProtocolError(
            ErrorCode.TOO_LARGE, "the body goes past Upload-Length", fatal=False
        )
        await pour(lambda: _read(ex, stops), writer, digest, limit, too_large)

    async def _interrupted(self, entry: Entry, *, checked: bool) -> None:
        """The request ended before its body did: keep what it sent, unless it
        was to be verified (then none of it can be)."""
        writer, ops = entry.writer, entry.ops
        if writer is None or ops is None or writer.done:
            entry.clear()
            return
        if checked:
            entry.clear()
            await ops.drop(writer)
            return
        try:
            await writer.checkpoint()
            writer.trim()
        except BaseException:
            entry.clear()
            await ops.leave(writer, keep=True)  # stores what it can, never raises
            raise

    async def _commit(self, entry: Entry, writer: TusWriter, ops: Operations) -> list[Header]:
        entry.clear()
        vouched = (writer.facts.tus or {}).get("sha1")
        try:
            sha1 = vouched or await writer.whole_sha1()
        except BaseException:
            await ops.leave(writer, keep=True)
            raise
        info = await ops.commit(writer, writer.size, sha1)
        return [("Upload-Offset", str(info.size)), *version_headers(info)]


async def _read(ex: Exchange, stops: list[asyncio.Future[None] | None]) -> bytes | None:
    """The next piece of the body; ``superseded`` once another request wants the
    upload (the piece being read then is not counted: the client learns the
    offset from HEAD)."""
    live = [stop for stop in stops if stop is not None]
    if any(stop.done() for stop in live):
        raise _superseded()
    piece = await read_unless(_piece(ex), live)
    if piece is None:
        raise _superseded()
    return piece or None


async def _piece(ex: Exchange) -> bytes:
    """The body's next non-empty piece, b"" at its end (read_unless's None is a stop)."""
    while (piece := await ex.read()) is not None:
        if piece:
            return piece
    return b""
