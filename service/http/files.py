"""The HTTP routes onto the store: ``/v1/files/`` and the descendant API (docs/http.md 3-4).

Each handler translates its request into the same operations the binary
door uses (:class:`~service.operations.Operations`) and their results into
a response. The rules behind them (keys, TTLs, sizes, namespaces, write
permission, verification) are those operations' and protocol/requests.py's,
called here, never restated. Bodies stream: a request's into the chunk
writer as it arrives (each write awaited: backpressure), a download's from
the chunk reader piece by piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from protocol import requests
from protocol.errors import ErrorCode, ProtocolError
from service.auth import Grant
from service.http import headers as h
from service.http.errors import HttpError, bad_request
from service.http.exchange import Exchange, Header
from service.http.routes import Target
from service.operations import Operations
from storage.errors import BadRange
from storage.hashing import THREAD_HASH_MIN
from storage.info import FileInfo
from storage.reader import Download
from storage.writer import ChunkWriter

#: Times a ranged GET reopens a file that changed between its two reads.
REOPEN = 3
JSON = ("Content-Type", "application/json")


async def pour(
    read: Callable[[], Awaitable[bytes | None]],
    writer: ChunkWriter,
    digest: Any,
    limit: int,
    too_large: ProtocolError,
) -> int:
    """A request body into ``writer``, piece by piece, hashed into ``digest`` when
    one is given (a large piece in a worker thread, beside its write); how many
    bytes. ``too_large`` once it passes ``limit`` (a chunked body declares none)."""
    received = 0
    while (piece := await read()) is not None:
        received += len(piece)
        if received > limit:
            raise too_large
        if digest is None:
            await writer.write(piece)
        elif len(piece) < THREAD_HASH_MIN:
            digest.update(piece)
            await writer.write(piece)
        else:
            await asyncio.gather(asyncio.to_thread(digest.update, piece), writer.write(piece))
    return received


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def version_headers(info: FileInfo) -> list[Header]:
    """What names a stored version: its entity tag and its digest."""
    return [("ETag", h.etag(info.sha1, info.vid)), ("Repr-Digest", h.repr_digest(info.sha1))]


class Files:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.config = ops.config

    async def handle(self, ex: Exchange, target: Target, grant: Grant) -> None:
        key = target.key
        match target.name, target.method:
            case "list", _:
                await self.list(ex, grant, target.query)
            case "files", "PUT":
                assert key is not None
                await self.put(ex, grant, key)
            case "files", "DELETE":
                assert key is not None
                await self.delete(ex, grant, key)
            case "files", _:
                assert key is not None
                await self.get(ex, grant, key, stored_type=True)
            case "upload", _:
                assert key is not None
                await self.put(ex, grant, key, descendant=True)
            case "download", _:
                assert key is not None
                await self.get(ex, grant, key, stored_type=False)

    # -- upload -------------------------------------------------------------

    async def put(self, ex: Exchange, grant: Grant, key: str, *, descendant: bool = False) -> None:
        f = ex.fields
        size = ex.content_length
        if descendant and size == 0:
            raise HttpError(422, ErrorCode.BAD_REQUEST, "the request has no file in its body")
        ttl = f.get("x-valise-ttl")
        put = requests.parse_put(
            {
                "key": key,
                "size": size,
                "ttl": None if ttl is None else h.seconds(ttl, "X-Valise-TTL"),
                # The descendant API's clients send form types (curl --data-binary).
                "content_type": None if descendant else h.media_type(f.get("content-type")),
            },
            max_file_size=self.config.max_file_size,
            max_ttl=self.config.max_ttl,
        )
        if_absent = self._create_only(ex)
        vouched = h.expected_sha1(f)
        self.ops.require_write(grant, fatal=False)
        # Create-only: refuse before the body is streamed, not after (the commit
        # checks again, atomically). A plain PUT learns 200 or 201 from its commit.
        if if_absent and await self.ops.exists(grant, key):
            raise HttpError(412, "exists", "the key already has a file")
        upload = await self.ops.put(
            grant,
            key,
            size=put.size,
            ttl=put.ttl,
            content_type=put.content_type,
            if_absent=if_absent,
        )
        try:
            received, own = await self._receive(ex, upload, hashed=vouched is None)
            if descendant and received == 0:
                raise HttpError(422, ErrorCode.BAD_REQUEST, "the request has no file in its body")
            sha1 = h.expected_sha1(f, ex.trailers) or own
            assert sha1 is not None
            info = await self.ops.commit(upload, received, sha1)
        except BaseException:
            await self.ops.leave(upload, keep=False)
            raise
        if descendant:
            await ex.respond(200, [JSON], _json({"ok": True}))
            return
        created = upload.replaced is False
        await ex.respond(
            201 if created else 200, [JSON, *version_headers(info)], _json(info.wire())
        )

    @staticmethod
    def _create_only(ex: Exchange) -> bool:
        """``If-None-Match: *``; other conditions on a PUT are refused, never ignored."""
        none_match = ex.fields.get("if-none-match")
        if "if-match" in ex.fields or (none_match is not None and none_match.strip() != "*"):
            raise bad_request("a PUT takes no condition but If-None-Match: *")
        return none_match is not None

    async def _receive(
        self, ex: Exchange, upload: ChunkWriter, *, hashed: bool
    ) -> tuple[int, str | None]:
        """Stream the request body into the upload; its size, and its SHA-1 when asked.

        The SHA-1 is ours only when the client vouches for none up front (a
        trailer may still bring one, then the writer checks it).
        """
        hasher = hashlib.sha1(usedforsecurity=False) if hashed else None
        limit = self.config.max_file_size
        too_large = ProtocolError(
            ErrorCode.TOO_LARGE, f"upload exceeds max_file_size {limit}", fatal=True
        )
        received = await pour(ex.read, upload, hasher, limit, too_large)
        return received, hasher.hexdigest() if hasher is not None else None

    # -- download -----------------------------------------------------------

    async def get(self, ex: Exchange, grant: Grant, key: str, *, stored_type: bool) -> None:
        try:
            info, download, part = await self._select(ex, grant, key)
        except NotModified as exc:
            ex.start(304, exc.headers)
            await ex.finish()
            return
        ctype = h.media_type(info.content_type) if stored_type else None
        fields = [
            ("Content-Type", ctype or "application/octet-stream"),
            *version_headers(info),
            ("Last-Modified", h.http_date(info.created_at)),
            ("Expires", h.http_date(info.expires_at)),
            ("Accept-Ranges", "bytes"),
        ]
        status, length = 200, info.size
        if part is not None:
            status, length = 206, part[1]
            fields.append(("Content-Range", h.content_range(*part, info.size)))
        fields.append(("Content-Length", str(length)))
        ex.start(status, fields)
        if download is not None:
            async with contextlib.aclosing(download.pieces()) as pieces:
                async for piece in pieces:
                    await ex.send(piece)
        await ex.finish()

    async def _select(
        self, ex: Exchange, grant: Grant, key: str
    ) -> tuple[FileInfo, Download | None, tuple[int, int] | None]:
        """The version to answer with, its download (None for HEAD: no bytes are
        read), and the (offset, length) asked of it (None: the whole file).

        A range is read from the very version its If-Range names and its ETag
        describes: the whole file is opened first (that pins a version and
        decides the conditions), the range second, kept only when it is of
        the same version.
        """
        asked = h.parse_range(ex.fields.get("range"))
        if_range = ex.fields.get("if-range")
        for _ in range(REOPEN):
            whole = None
            if ex.method == "HEAD":
                info = await self.ops.stat(grant, key)
            else:
                whole = await self.ops.get(grant, key, None, None)
                info = whole.info
            self._preconditions(ex, info)
            if asked is None or not h.range_applies(if_range, h.etag(info.sha1, info.vid)):
                return info, whole, None
            part = asked.resolve(info.size)
            if part is None:
                raise HttpError(
                    416,
                    ErrorCode.BAD_RANGE,
                    f"the range is outside the file's {info.size} bytes",
                    headers=(("Content-Range", h.unsatisfied_range(info.size)),),
                )
            if whole is None:
                return info, None, part
            try:
                ranged = await self.ops.get(grant, key, *part)
            except BadRange:
                continue  # replaced by a shorter version meanwhile
            if ranged.info.vid == info.vid:
                return info, ranged, part
        raise HttpError(503, ErrorCode.UNAVAILABLE, "the file kept changing; try again")

    @staticmethod
    def _preconditions(ex: Exchange, info: FileInfo) -> None:
        """If-Match, then If-None-Match (RFC 9110 section 13.2.2), on the version at hand."""
        tag = h.etag(info.sha1, info.vid)
        if_match = ex.fields.get("if-match")
        if if_match is not None and not h.match(if_match, tag):
            raise HttpError(
                412, ErrorCode.NOT_FOUND, "the file's current version does not match If-Match"
            )
        if_none_match = ex.fields.get("if-none-match")
        if if_none_match is not None and h.none_match(if_none_match, tag):
            raise NotModified(
                [*version_headers(info), ("Last-Modified", h.http_date(info.created_at))]
            )

    # -- the rest -------------------------------------------------------------

    async def delete(self, ex: Exchange, grant: Grant, key: str) -> None:
        if not await self.ops.delete(grant, key):
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such file")
        await ex.respond(204, [])

    async def list(self, ex: Exchange, grant: Grant, query: dict[str, str]) -> None:
        limit = query.get("limit")
        if limit is not None and not (limit.isascii() and limit.isdigit() and len(limit) < 10):
            raise bad_request("limit must be a positive integer")
        request = requests.parse_list(
            {
                "prefix": query.get("prefix"),
                "cursor": query.get("cursor") or None,
                "limit": None if limit is None else int(limit),
            }
        )
        files, cursor = await self.ops.list(grant, request.prefix, request.cursor, request.limit)
        body = _json({"files": [info.wire() for info in files], "cursor": cursor})
        await ex.respond(200, [JSON], body)


class NotModified(Exception):
    """A conditional GET whose version the client has: 304, no body."""

    def __init__(self, headers: list[Header]) -> None:
        super().__init__("not modified")
        self.headers = headers
