"""One client connection: read, decode, serve requests, reply, close.

Bytes go to :class:`protocol.state.ServerConnection`; each event runs against
storage; replies are written in request order. The storage write of a DATA
frame is awaited before the next frame is read: backpressure for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from protocol import requests
from protocol.decoder import CLOSED, Sentinel
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import HEADER, FrameType, encode_control, list_page
from protocol.state import Abort, Data, Event, Limits, ServerConnection, UploadEnd
from service.auth import OPEN
from service.deadline import Closing, Intake, fatal
from service.listener import Peer
from service.operations import Operations
from service.peer import RateFloor, certificate_name, closed_within, drain, linger_bounded
from service.state import FLUSH_AFTER_ERROR, ServerState
from service.subscription import Subscription
from storage import ChunkWriter, ResumableWriter, StorageError

#: DATA frames up to GATHER bytes go with the frames around them, GATHER_FRAMES
#: parts (headers and payloads) at most: one send, not three.
GATHER = 64 * 1024
GATHER_FRAMES = 32
#: Frames one connection handles before it yields to the event loop: a DATA frame
#: costs microseconds, so one client's tiny frames delay the others by a few ms at
#: most (1 MiB frames never reach it: the writer awaits Valkey every few frames).
MAX_BURST = 256

log = logging.getLogger("valise")


def _wire(exc: StorageError, *, fatal: bool) -> ProtocolError:
    """A storage failure as the ERROR the client gets; fatality depends on where we are."""
    return ProtocolError(exc.code, exc.message, fatal=fatal, **exc.extra)


#: Requests whose record waits for the upload's end; an upload's own frames.
#: Tuples, built once: ``A | B`` in isinstance() builds a union at every call.
_UPLOADS = (requests.Put, requests.Resume, Data)
_UPLOAD_PARTS = (Data, UploadEnd, Abort)
#: A request's name in the access log and metrics (``put`` for requests.Put), by type.
_OPS = {kind: kind.__name__.lower() for kind in requests.Request.__args__}


_now = time.monotonic


class Connection:
    def __init__(
        self,
        state: ServerState,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        self.state = state
        self.config = state.config
        self.ops = Operations(state)
        #: The client's address (behind a balancer, from its PROXY header).
        self.peer = peer
        self._peer_text = str(peer)  # every access record names it
        self.reader = reader
        self.writer = writer
        self.proto = ServerConnection(
            Limits(self.config.max_frame, self.config.max_file_size, self.config.max_ttl),
            hello_required=self.ops.authenticating,
            features=state.features,
            # The chunk writer hashes the file in its worker thread instead.
            hash_uploads=False,
        )
        #: What this connection may do; decided by HELLO when tokens are configured.
        self.grant = OPEN
        self.upload: ChunkWriter | None = None
        #: Set by SUBSCRIBE: from then on the connection streams events.
        self.subscription: Subscription | None = None
        #: Reads under the idle, frame and upload-rate deadlines.
        self.intake = Intake(
            reader,
            self.config.idle_timeout,
            self.config.frame_timeout,
            RateFloor(self.config.min_rate, self.config.min_rate_window),
        )
        self._request: tuple[str, str | None, float] | None = None
        self._nbytes = 0
        #: True while a request or upload is in progress (shutdown waits for it).
        self.busy = False
        #: Replies not sent yet (PUT's first OK; replies to pipelined requests),
        #: until the next write or read: one send for the lot.
        self._held = b""

    async def run(self, refuse: ProtocolError | None = None) -> None:
        # How long the last bytes we wrote may take to leave after close().
        flush = self.config.idle_timeout
        try:
            error = refuse or await self._serve_until_error()
            self._write(b"")  # a held reply goes before the end
            if error is not None:
                flush = FLUSH_AFTER_ERROR  # the linger was the client's time
                # docs/protocol.md section 2, PUT: a lingering close.
                payload = encode_control(FrameType.ERROR, error.payload())
                await linger_bounded(self.state, self, self.reader, self.writer, payload)
        except asyncio.CancelledError:
            pass  # shutdown gave up waiting; the socket is closed below
        finally:
            self.writer.close()
        await closed_within(self.writer, flush)

    async def _serve_until_error(self) -> ProtocolError | None:
        """Serve requests; the fatal ERROR to end with, or None for a quiet close."""
        try:
            await self._serve()
        except Closing as exc:
            return exc.error
        except asyncio.CancelledError:
            # Cancelled by shutdown while idle: say so, then close like any fatal error.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return fatal(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        except (ConnectionError, OSError):
            log.debug("connection lost")
        except Exception:
            log.exception("internal error")
            return fatal(ErrorCode.INTERNAL, "internal server error")
        finally:
            self.intake.close()
            self._end("disconnected")
            await self._drop_upload()
            if self.subscription is not None:
                await self.subscription.close()
        return None

    async def _serve(self) -> None:
        # Frames handled since the loop last ran anything else: one read of
        # 1 MiB can hold 200,000 legal one-byte DATA frames (issue: a second
        # of CPU with no other client, and no TTL keeper, running).
        burst = 0
        while True:
            try:
                event = self.proto.next_event()
                if event is CLOSED:
                    return
                if isinstance(event, Sentinel):  # NEED_DATA
                    burst = 0
                    await self._receive()
                    continue
                burst += 1
                if burst >= MAX_BURST:
                    burst = 0
                    await asyncio.sleep(0)  # let the others run
                self.busy = True
                self._begin(event)
                await self._handle(event)
                if not isinstance(event, _UPLOADS):
                    self._end("aborted" if isinstance(event, Abort) else "ok")
                self.intake.frame_done()
            except ProtocolError as exc:
                self._end(str(exc.code))
                # A resumable upload survives a fatal error, not a size mismatch.
                await self._drop_upload(keep=exc.fatal)
                if exc.fatal:
                    raise Closing(exc) from None
                await self._error(exc)
            except StorageError as exc:
                self._end(str(exc.code))
                # While the client may still be sending DATA, every ERROR is fatal;
                # so is losing a resumed upload to another connection.
                fatal_now = self.proto.uploading or exc.code is ErrorCode.SUPERSEDED
                if fatal_now:
                    self.proto.fail()
                await self._drop_upload()
                if fatal_now:
                    raise Closing(_wire(exc, fatal=True)) from None
                await self._error(_wire(exc, fatal=False))
            self.busy = self.proto.uploading
            if self.state.closing and not self.busy:
                raise Closing(fatal(ErrorCode.SHUTTING_DOWN, "server is shutting down"))

    def _begin(self, event: Event) -> None:
        """Note the request an access-log record will describe (an upload: from PUT on)."""
        if isinstance(event, _UPLOAD_PARTS):
            return
        key = getattr(event, "key", None)
        op = _OPS[type(event)]
        self._request = (op, key, _now())
        self._nbytes = 0
        self.state.metrics.request_started(op)

    def _end(self, outcome: str) -> None:
        """Write the access-log record (and the metrics) of the request in progress, once."""
        if self._request is None:
            return
        op, key, started = self._request
        self._request = None
        self.state.access.record(
            peer=self._peer_text,
            namespace=self.grant.namespace,
            op=op,
            key=key,
            nbytes=self._nbytes,
            started=started,
            outcome=outcome,
        )
        self.state.metrics.request_ended(op, outcome, _now() - started, self._nbytes)

    async def _receive(self) -> None:
        """Read more input within the connection's deadlines (service/deadline.py)."""
        self._write(b"")  # the client may wait for a held reply before it sends more
        wanted = self.ops.wanted(self.upload) if self.upload is not None else None
        data = await self.intake.read(
            in_frame=self.proto.in_frame,
            uploading=self.proto.uploading,
            wanted=wanted,
            subscription=self.subscription,
        )
        if data is None:  # a RESUME on another connection of this process won
            self._end(str(ErrorCode.SUPERSEDED))
            raise Closing(fatal(ErrorCode.SUPERSEDED, "another connection resumed this upload"))
        self.proto.receive_data(data)

    async def _drop_upload(self, *, keep: bool = True) -> None:
        """End the upload without a commit: a resumable one is kept for a RESUME
        (with a DATA frame cut off midway), unless ``keep`` is False."""
        if self.upload is not None:
            upload, self.upload = self.upload, None
            unread = self.proto.unfinished_data() if keep else b""
            await self.ops.leave(upload, keep=keep, unread=unread)

    # -- replies ----------------------------------------------------------

    def _write(self, data: bytes | memoryview) -> None:
        """Write ``data``, after the replies held back until now (see _reply)."""
        if self._held:
            held, self._held = self._held, b""
            if len(data) <= GATHER:
                data = held + data
            else:
                self.writer.write(held)
        if data:
            self.writer.write(data)

    async def _drain(self) -> None:
        """Wait for the client to take what we wrote; a reader that stops is cut off."""
        try:
            await drain(self.writer, self.config.idle_timeout)
        except TimeoutError:
            raise Closing(fatal(ErrorCode.TIMEOUT, "client stopped reading")) from None

    async def _reply(self, frame: bytes) -> None:
        """Send ``frame``, or hold it while more input is buffered: the next
        request's reply goes with it. Never waits on the client: any read
        (``_receive``) and any other write send what is held first."""
        if self.proto.buffered and len(self._held) + len(frame) <= GATHER:
            self._held += frame
            return
        self._write(frame)
        await self._drain()

    async def _ok(self, obj: dict[str, Any]) -> None:
        await self._reply(encode_control(FrameType.OK, obj))

    async def _error(self, error: ProtocolError) -> None:
        await self._reply(encode_control(FrameType.ERROR, error.payload()))

    # -- requests ---------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        match event:
            case Data(payload):
                assert self.upload is not None
                self._nbytes += len(payload)
                await self.upload.write(payload)
            case UploadEnd(size, sha1):
                assert self.upload is not None
                upload, self.upload = self.upload, None
                info = await self.ops.commit(upload, size, sha1)
                await self._ok(info.wire())
            case Abort():
                await self._drop_upload(keep=False)
                await self._ok({"aborted": True})
            case requests.Put():
                await self._put(event)
            case requests.Resume(upload_id):
                await self._resume(upload_id)
            case requests.Get():
                await self._get(event)
            case requests.Stat(key):
                info = await self.ops.stat(self.grant, key)
                await self._ok(info.wire())
            case requests.Delete(key):
                await self._ok({"deleted": await self.ops.delete(self.grant, key)})
            case requests.List():
                await self._list(event)
            case requests.Ping(payload):
                await self._reply(HEADER.pack(FrameType.OK, len(payload)) + payload)
            case requests.Subscribe(prefix, since):
                subscription = await self.ops.subscribe(self.grant, prefix, since)
                self.subscription = subscription
                self.proto.subscribed()
                await self._ok(subscription.ok())
                self._write(b"")  # from now on the subscription writes too
                subscription.start(self.writer, self.config.idle_timeout)
            case requests.Hello(token=token):
                self.grant = await self.ops.authenticate(
                    token, certificate_name(self.writer), self.peer.host
                )
                await self._ok(self.state.hello())

    async def _put(self, put: requests.Put) -> None:
        upload = self.upload = await self.ops.put(
            self.grant,
            put.key,
            size=put.size,
            ttl=put.ttl,
            content_type=put.content_type,
            resumable=put.resumable,
            if_absent=put.if_absent,
        )
        reply = {"upload_id": upload.upload_id, "chunk_size": upload.chunk_size, "offset": 0}
        if isinstance(upload, ResumableWriter):
            # At once: a client whose link breaks needs the upload_id to resume.
            reply |= {"resumable": True, "resume_until": upload.deadline}
            await self._ok(reply)
            return
        # Held, not sent: when the file's DATA and END are already here (a small
        # upload), this OK and the stored one leave in one send, not two.
        self._held += encode_control(FrameType.OK, reply)

    async def _resume(self, upload_id: str) -> None:
        """RESUME (docs/protocol.md section 6.1): the upload goes on from ``offset``."""
        upload = self.upload = await self.ops.resume(self.grant, upload_id)
        self.proto.resume_upload(upload.declared, upload.size)
        if self._request is not None:  # the access log names the key, as for a PUT
            self._request = (self._request[0], upload.key, self._request[2])
        await self._ok(
            {
                "upload_id": upload.upload_id,
                "key": upload.key,
                "offset": upload.size,
                "size": upload.declared,
                "chunk_size": upload.chunk_size,
                "resume_until": upload.deadline,
            }
        )

    async def _get(self, get: requests.Get) -> None:
        download = await self.ops.get(self.grant, get.key, get.offset, get.length, get.version)
        # Small frames are gathered and sent together (a small file's OK, DATA
        # and END in one send); a large frame goes out as it is, without a copy.
        out: list[bytes | memoryview] = [
            encode_control(
                FrameType.OK,
                {**download.info.wire(), "offset": download.offset, "length": download.length},
            )
        ]

        def flush() -> None:
            self._write(b"".join(out) if len(out) > 1 else out[0])
            out.clear()

        step = self.config.max_frame
        try:
            async with contextlib.aclosing(download.pieces()) as pieces:
                async for piece in pieces:
                    for at in range(0, len(piece), step):
                        frame = piece[at : at + step]
                        out.append(HEADER.pack(FrameType.DATA, len(frame)))
                        # Bytes actually sent: a download cut short logs (and counts) less.
                        self._nbytes += len(frame)
                        if len(frame) <= GATHER and len(out) < GATHER_FRAMES:
                            out.append(frame)
                            continue
                        flush()
                        self._write(frame)
                        await self._drain()
        except StorageError as exc:
            # The stream ends at a frame boundary: not fatal (docs/protocol.md section 2, GET).
            if out:
                flush()
            await self._error(_wire(exc, fatal=False))
            return
        digest = bytes.fromhex(download.sha1)
        out.append(HEADER.pack(FrameType.END, len(digest)) + digest)
        await self._reply(b"".join(out))

    async def _list(self, request: requests.List) -> None:
        files, cursor = await self.ops.list(
            self.grant, request.prefix, request.cursor, request.limit
        )
        page, cursor = list_page([info.wire() for info in files], cursor, request.cursor)
        await self._ok({"files": page, "cursor": cursor})
