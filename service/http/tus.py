"""tus 1.0.0 on the HTTP door: ``/v1/uploads/`` (docs/http.md section 7).

The core protocol plus creation, creation-with-upload, termination,
checksum (sha1) and expiration, built on the resumable uploads of
docs/protocol.md section 6.1: the same staged chunks, the same resume
window (--resume-ttl), the same --max-resumable count, the same whole-file
SHA-1 check and atomic commit (with its change event) when the last byte
arrives. Between two requests the upload's writer waits in this process
(:mod:`service.parked`); every byte of every finished PATCH is in Valkey.

How a PATCH's bytes are kept or dropped lives in :mod:`service.http.tusbody`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from protocol import requests
from protocol.errors import ErrorCode, ProtocolError
from service.auth import Grant
from service.http import headers as h
from service.http import tusfields as tf
from service.http.errors import HttpError, WireError, bad_request, status_of
from service.http.exchange import Exchange, Header
from service.http.routes import Target
from service.http.tusbody import Appender
from service.operations import Operations
from service.parked import Entry
from storage.errors import FileNotFound, StorageError
from storage.tus import TUS_PREFIX, Peeked, TusWriter, peek_upload, terminate

#: Where an upload lives: the Location of its creation.
PREFIX = "/v1/uploads/"


def is_tus(target: str) -> bool:
    """True for a request to the tus routes: its every response says Tus-Resumable."""
    path = target.split("?", 1)[0]
    if path.lower().startswith(("http://", "https://")):
        path = "/" + path.split("/", 3)[-1]
    return path == "/v1/uploads" or path.startswith(PREFIX)


class Tus:
    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.config = ops.config
        self.body = Appender(ops)

    async def handle(self, ex: Exchange, target: Target, grant: Grant) -> None:
        if target.method == "OPTIONS":
            await ex.respond(204, tf.options(self.config.max_file_size))
            return
        tf.check_resumable(ex.fields.get("tus-resumable"))
        upload_id = target.key
        match target.method, upload_id:
            case "POST", None:
                await self.create(ex, grant)
            case "HEAD", str():
                await self.head(ex, grant, upload_id)
            case "PATCH", str():
                await self.patch(ex, grant, upload_id)
            case "DELETE", str():
                await self.delete(ex, grant, upload_id)
            case _:
                raise HttpError(405, ErrorCode.BAD_REQUEST, "method not allowed here")

    # -- creation -------------------------------------------------------------

    async def create(self, ex: Exchange, grant: Grant) -> None:
        f = ex.fields
        if "upload-defer-length" in f:
            raise bad_request("Upload-Defer-Length is not supported: send Upload-Length")
        if "upload-concat" in f:
            raise bad_request("Upload-Concat (concatenation) is not supported")
        length = tf.number(f.get("upload-length"), "Upload-Length")
        raw = f.get("upload-metadata")
        metadata = tf.parse_metadata(raw)
        key = tf.text(metadata, "key") or tf.text(metadata, "filename")
        if key is None:
            raise bad_request("Upload-Metadata must name the file: key (or filename)")
        kind = tf.text(metadata, "content_type") or tf.text(metadata, "filetype")
        put = requests.parse_put(
            {
                "key": key,
                "size": length,
                "ttl": tf.ttl(metadata),
                "content_type": h.media_type(kind),
            },
            max_file_size=self.config.max_file_size,
            max_ttl=self.config.max_ttl,
        )
        facts = {"metadata": raw or ""}
        sha1 = tf.whole_sha1(metadata)
        if sha1 is not None:
            facts["sha1"] = sha1
        uploading = tf.is_offset_stream(f.get("content-type"))
        if not uploading and ex.content_length != 0:
            raise HttpError(415, ErrorCode.BAD_REQUEST, f"an upload's body is {tf.OFFSET_STREAM}")
        checksum = tf.parse_checksum(f.get("upload-checksum")) if uploading else None
        self.body.check_length(ex, 0, length)
        writer = await self.ops.put_tus(
            grant, put.key, size=length, ttl=put.ttl, content_type=put.content_type, tus=facts
        )
        location = ("Location", PREFIX + writer.upload_id)
        async with self.ops.state.parked.take((grant.namespace, writer.upload_id), 1.0) as entry:
            entry.keep(writer, self.ops)
            try:
                fields = await self.body.append(ex, entry, checksum)
            except HttpError as exc:
                exc.headers = (*exc.headers, location)
                raise
            except (ProtocolError, StorageError) as exc:
                raise _located(exc, location) from None
        await ex.respond(201, [location, *fields])

    # -- the core protocol ------------------------------------------------------

    async def head(self, ex: Exchange, grant: Grant, upload_id: str) -> None:
        async with self._take(grant, upload_id):
            peeked = await self._peek(grant, upload_id)
        fields: list[Header] = [
            ("Upload-Offset", str(peeked.offset)),
            ("Upload-Length", str(peeked.facts.size)),
            ("Upload-Expires", h.http_date(peeked.deadline)),
            ("Cache-Control", "no-store"),
        ]
        metadata = (peeked.facts.tus or {}).get("metadata")
        if metadata:
            fields.append(("Upload-Metadata", metadata))
        await ex.respond(200, fields)

    async def patch(self, ex: Exchange, grant: Grant, upload_id: str) -> None:
        f = ex.fields
        if not tf.is_offset_stream(f.get("content-type")):
            raise HttpError(415, ErrorCode.BAD_REQUEST, f"a PATCH's body is {tf.OFFSET_STREAM}")
        offset = tf.number(f.get("upload-offset"), "Upload-Offset")
        checksum = tf.parse_checksum(f.get("upload-checksum"))
        self.ops.require_write(grant, fatal=False)
        async with self._take(grant, upload_id) as entry:
            writer = await self._writer(entry, grant, upload_id)
            if offset != writer.size:
                raise HttpError(
                    409,
                    ErrorCode.BAD_REQUEST,
                    f"Upload-Offset {offset} is not the upload's offset {writer.size}",
                    headers=(("Upload-Offset", str(writer.size)),),
                )
            declared = writer.declared
            assert declared is not None
            self.body.check_length(ex, offset, declared)
            fields = await self.body.append(ex, entry, checksum)
        await ex.respond(204, fields)

    async def delete(self, ex: Exchange, grant: Grant, upload_id: str) -> None:
        self.ops.require_write(grant, fatal=False)
        async with self._take(grant, upload_id) as entry:
            if entry.writer is not None and entry.ops is not None:
                writer, ops = entry.writer, entry.ops
                entry.clear()
                await ops.drop(writer)
            if not await terminate(self.ops.store, grant.namespace, upload_id):
                raise await self._gone(grant, upload_id)
        await ex.respond(204, [])

    # -- finding the upload -------------------------------------------------------

    def _take(self, grant: Grant, upload_id: str) -> AbstractAsyncContextManager[Entry]:
        if not upload_id.startswith(TUS_PREFIX):
            raise HttpError(404, ErrorCode.NOT_FOUND, "no such upload")
        slot = (grant.namespace, upload_id)
        return self.ops.state.parked.take(slot, self.config.storage_timeout)

    async def _writer(self, entry: Entry, grant: Grant, upload_id: str) -> TusWriter:
        """The upload's writer: the one parked here if it is still the owner, else
        the upload taken over from Valkey (its running SHA-1 rebuilt)."""
        if entry.writer is not None and entry.ops is not None:
            if await entry.writer.still_ours():
                return entry.writer
            writer, ops = entry.writer, entry.ops
            entry.clear()
            await ops.drop(writer)
        try:
            resumed = await self.ops.resume(grant, upload_id, tus=True)
        except FileNotFound:
            raise await self._gone(grant, upload_id) from None
        assert isinstance(resumed, TusWriter)
        entry.keep(resumed, self.ops)
        return resumed

    async def _peek(self, grant: Grant, upload_id: str) -> Peeked:
        found = await peek_upload(self.ops.store, grant.namespace, upload_id)
        if isinstance(found, Peeked):
            return found
        raise _missing(expired=found)

    async def _gone(self, grant: Grant, upload_id: str) -> HttpError:
        """404 for an upload never known (or finished, or terminated); 410 for one
        that expired, while the namespace's list of open uploads still names it."""
        found = await peek_upload(self.ops.store, grant.namespace, upload_id)
        return _missing(expired=found is True)


def _missing(*, expired: bool) -> HttpError:
    if expired:
        return HttpError(410, ErrorCode.NOT_FOUND, "the upload expired (--resume-ttl)")
    return HttpError(404, ErrorCode.NOT_FOUND, "no such upload")


def _located(error: WireError, location: Header) -> HttpError:
    """A failure after the creation: the client still learns where the upload is."""
    return HttpError(
        status_of(error), str(error.code), error.message, headers=(location,), **error.extra
    )
