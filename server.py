"""Valise server: glue between sockets, the sans-IO protocol and Valkey storage.

Listen, read, hand bytes to :class:`protocol.state.ServerConnection`, run each
event against storage, write the replies. One request at a time per
connection (replies come in request order), and the storage write of a DATA
frame is awaited before the next frame is read: backpressure for free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from auth import OPEN, FailureDelay, TokenFileError, Tokens
from config import Config, parse_args
from protocol import requests
from protocol.decoder import CLOSED, Sentinel
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import HEADER, MAX_CONTROL, FrameType, control_size, encode_control
from protocol.state import Abort, Data, Event, Limits, ServerConnection, UploadEnd
from storage.embedded import EmbeddedValkey
from storage.errors import MisconfiguredValkey, StorageError
from storage.reader import open_download
from storage.store import StorageConfig, Store
from storage.writer import ChunkWriter

VERSION = "0.1.0"
READ_SIZE = 1024 * 1024
#: Lingering close (PROTOCOL.md section 2): after a fatal ERROR, read and
#: discard what the client still sends, within these bounds, so a client
#: still streaming reads the ERROR instead of a reset.
LINGER_BYTES = 32 * 1024 * 1024
LINGER_IDLE = 6.0
LINGER_TOTAL = 10.0

log = logging.getLogger("valise")


def _fatal(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, message, fatal=True)


def _now() -> float:
    return time.monotonic()


class RateFloor:
    """Minimum average rate of an upload, over windows of time spent waiting on the client.

    Only time spent waiting for the client's bytes counts, so a slow Valkey
    (we stop reading while a chunk is written) never trips it. Like Apache's
    mod_reqtimeout MinRate and Kestrel's MinRequestBodyDataRate.
    """

    def __init__(self, min_rate: int, window: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self._bytes = 0
        self._waited = 0.0

    def add(self, received: int, waited: float) -> bool:
        """Count a read; False when a full window averaged under the floor."""
        self._bytes += received
        self._waited += waited
        if self._waited < self.window:
            return True
        ok = self._bytes >= self.min_rate * self._waited
        self._bytes, self._waited = 0, 0.0
        return ok


class Closing(Exception):
    """The connection ends; ``error`` (if any) is the last frame it gets."""

    def __init__(self, error: ProtocolError | None = None) -> None:
        super().__init__(error.message if error else "closed")
        self.error = error


class Connection:
    def __init__(
        self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.config = server.config
        self.store = server.store
        self.reader = reader
        self.writer = writer
        self.proto = ServerConnection(
            Limits(self.config.max_frame, self.config.max_file_size, self.config.max_ttl),
            hello_required=server.tokens is not None,
        )
        #: What this connection may do; decided by HELLO when tokens are configured.
        self.grant = OPEN
        self.upload: ChunkWriter | None = None
        self._frame_deadline = _now() + self.config.frame_timeout
        self._rate = RateFloor(self.config.min_rate, self.config.min_rate_window)
        #: True while a request or upload is in progress (shutdown waits for it).
        self.busy = False

    async def run(self, refuse: ProtocolError | None = None) -> None:
        try:
            error = refuse or await self._serve_until_error()
            if error is not None:
                # A lingering close no longer counts against --max-connections.
                self.server.forget(self)
                await self._linger(error)
        except asyncio.CancelledError:
            pass  # shutdown gave up waiting; the socket is closed below
        finally:
            self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

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
            return _fatal(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        except (ConnectionError, OSError):
            log.debug("connection lost")
        except Exception:
            log.exception("internal error")
            return _fatal(ErrorCode.INTERNAL, "internal server error")
        finally:
            await self._drop_upload()
        return None

    async def _serve(self) -> None:
        while True:
            try:
                event = self.proto.next_event()
                if event is CLOSED:
                    return
                if isinstance(event, Sentinel):  # NEED_DATA
                    await self._receive()
                    continue
                self.busy = True
                await self._handle(event)
                self._frame_deadline = _now() + self.config.frame_timeout
            except ProtocolError as exc:
                await self._drop_upload(unless_uploading=not exc.fatal)
                if exc.fatal:
                    raise Closing(exc) from None
                await self._error(exc)
            except StorageError as exc:
                # While the client may still be sending DATA, every ERROR is fatal.
                uploading = self.proto.uploading
                await self._drop_upload()
                if uploading:
                    self.proto.fail()
                    raise Closing(_fatal(exc.code, exc.message)) from None
                await self._error(ProtocolError(exc.code, exc.message, fatal=False))
            self.busy = self.proto.uploading
            if self.server.closing and not self.busy:
                raise Closing(_fatal(ErrorCode.SHUTTING_DOWN, "server is shutting down"))

    async def _receive(self) -> None:
        """Read more input within the idle timeout, the frame deadline and the upload rate."""
        now = _now()
        if not self.proto.in_frame:
            self._frame_deadline = now + self.config.frame_timeout
        # Slowloris: a frame that has started must be complete by its deadline.
        timeout = min(self.config.idle_timeout, self._frame_deadline - now)
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                data = await self.reader.read(READ_SIZE)
        except TimeoutError:
            if self.proto.in_frame:
                raise Closing(_fatal(ErrorCode.TIMEOUT, "frame not completed in time")) from None
            raise Closing(_fatal(ErrorCode.TIMEOUT, "connection idle for too long")) from None
        if self.proto.uploading and not self._rate.add(len(data), _now() - now):
            raise Closing(_fatal(ErrorCode.TIMEOUT, "upload slower than the server's minimum rate"))
        self.proto.receive_data(data)

    async def _drop_upload(self, *, unless_uploading: bool = False) -> None:
        if self.upload is not None and not (unless_uploading and self.proto.uploading):
            upload, self.upload = self.upload, None
            await upload.abort()

    # -- replies ----------------------------------------------------------

    async def _drain(self) -> None:
        """Wait for the client to take what we wrote; a reader that stops is cut off."""
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                await self.writer.drain()
        except TimeoutError:
            raise Closing(_fatal(ErrorCode.TIMEOUT, "client stopped reading")) from None

    async def _ok(self, obj: dict[str, Any]) -> None:
        self.writer.write(encode_control(FrameType.OK, obj))
        await self._drain()

    async def _error(self, error: ProtocolError) -> None:
        self.writer.write(encode_control(FrameType.ERROR, error.payload()))
        await self._drain()

    async def _linger(self, error: ProtocolError) -> None:
        """Send the fatal ERROR, half-close, drain the client's input for a bounded while.

        A client still streaming DATA then reads the ERROR instead of a reset
        (PROTOCOL.md section 2, PUT). It ends at the client's EOF, after
        LINGER_BYTES, after LINGER_IDLE seconds without input (a client may
        pause before it streams on), or LINGER_TOTAL seconds in all.
        """
        with contextlib.suppress(TimeoutError, ConnectionError, OSError, RuntimeError):
            async with asyncio.timeout(LINGER_TOTAL):
                self.writer.write(encode_control(FrameType.ERROR, error.payload()))
                await self.writer.drain()
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                discarded = 0
                while discarded < LINGER_BYTES:
                    async with asyncio.timeout(LINGER_IDLE):
                        data = await self.reader.read(READ_SIZE)
                    if not data:
                        break
                    discarded += len(data)

    # -- requests ---------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        match event:
            case Data(payload):
                assert self.upload is not None
                await self.upload.write(payload)
            case UploadEnd(size, sha1):
                assert self.upload is not None
                upload, self.upload = self.upload, None
                info = await upload.commit(size, sha1)
                await self._ok(info.wire())
            case Abort():
                await self._drop_upload()
                await self._ok({"aborted": True})
            case requests.Put():
                await self._put(event)
            case requests.Get():
                await self._get(event)
            case requests.Stat(key):
                info = await self.store.stat(self.grant.namespace, key)
                await self._ok(info.wire())
            case requests.Delete(key):
                self._require_write(fatal=False)
                await self._ok({"deleted": await self.store.delete(self.grant.namespace, key)})
            case requests.List():
                await self._list(event)
            case requests.Ping(payload):
                self.writer.write(HEADER.pack(FrameType.OK, len(payload)) + payload)
                await self._drain()
            case requests.Hello(token=token):
                await self._hello(token)
                await self._ok(self.server.hello())

    async def _hello(self, token: str | None) -> None:
        tokens = self.server.tokens
        if tokens is None:
            return  # no authentication: a token, if any, is ignored
        grant = tokens.check(token)
        address = str(self.writer.get_extra_info("peername", ("?",))[0])
        if grant is None:
            delay = self.server.auth_failures.failed(address)
            log.warning(
                "authentication failed (%d in all)", self.server.auth_failures.failures_total
            )
            await asyncio.sleep(delay)
            raise _fatal(ErrorCode.UNAUTHORIZED, "unknown token")
        self.server.auth_failures.succeeded(address)
        self.grant = grant

    def _require_write(self, *, fatal: bool) -> None:
        if not self.grant.writable:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this token may not write", fatal=fatal)

    async def _put(self, put: requests.Put) -> None:
        self._require_write(fatal=True)
        await self.store.check_writable(put.size)
        self.upload = ChunkWriter(
            self.store,
            self.grant.namespace,
            put.key,
            ttl=put.ttl or self.config.default_ttl,
            content_type=put.content_type,
        )
        await self._ok(
            {"upload_id": self.upload.vid, "chunk_size": self.config.chunk_size, "offset": 0}
        )

    async def _get(self, get: requests.Get) -> None:
        download = await open_download(
            self.store, self.grant.namespace, get.key, get.offset, get.length
        )
        await self._ok(
            {**download.info.wire(), "offset": download.offset, "length": download.length}
        )
        step = self.config.max_frame
        try:
            async with contextlib.aclosing(download.pieces()) as pieces:
                async for piece in pieces:
                    for at in range(0, len(piece), step):
                        frame = piece[at : at + step]
                        self.writer.write(HEADER.pack(FrameType.DATA, len(frame)))
                        self.writer.write(frame)
                        await self._drain()
        except StorageError as exc:
            # The stream ends at a frame boundary: not fatal (PROTOCOL.md, GET).
            await self._error(ProtocolError(exc.code, exc.message, fatal=False))
            return
        digest = bytes.fromhex(download.sha1)
        self.writer.write(HEADER.pack(FrameType.END, len(digest)) + digest)
        await self._drain()

    async def _list(self, request: requests.List) -> None:
        files, cursor = await self.store.list(
            self.grant.namespace, request.prefix, request.cursor, request.limit
        )
        page: list[dict[str, Any]] = []
        budget = MAX_CONTROL - control_size({"files": [], "cursor": "x" * 2048})
        for info in files:
            entry = info.wire()
            cost = control_size(entry) + 1
            if cost > budget:
                # The page is full: continue after the last entry that fit.
                cursor = page[-1]["key"] if page else request.cursor
                break
            budget -= cost
            page.append(entry)
        await self._ok({"files": page, "cursor": cursor})


class Server:
    def __init__(self, config: Config, store: Store, tokens: Tokens | None = None) -> None:
        self.config = config
        self.store = store
        self.tokens = tokens
        self.auth_failures = FailureDelay()
        self.closing = False
        self.connections: dict[asyncio.Task[None], Connection] = {}
        self._listener: asyncio.Server | None = None

    def hello(self) -> dict[str, Any]:
        c = self.config
        return {
            "server": f"valise/{VERSION}",
            "version": 1,
            "max_frame": c.max_frame,
            "chunk_size": c.chunk_size,
            "max_file_size": c.max_file_size,
            "default_ttl": c.default_ttl,
            "max_ttl": c.max_ttl,
        }

    async def start(self) -> tuple[str, int]:
        self._listener = await asyncio.start_server(
            self._accept, self.config.host, self.config.port, limit=2 * READ_SIZE
        )
        host, port = self._listener.sockets[0].getsockname()[:2]
        return host, port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = Connection(self, reader, writer)
        refuse = None
        if len(self.connections) >= self.config.max_connections:
            refuse = _fatal(ErrorCode.BUSY, "too many connections; try again later")
        elif self.closing:
            refuse = _fatal(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        task = asyncio.current_task()
        assert task is not None
        if refuse is None:
            self.connections[task] = connection
        try:
            await connection.run(refuse)
        finally:
            self.connections.pop(task, None)

    def reload_tokens(self) -> None:
        """SIGHUP: read the tokens file again; keep the old tokens if it is malformed."""
        if self.config.tokens is None:
            return
        try:
            self.tokens = Tokens.load(self.config.tokens)
        except TokenFileError as exc:
            log.error("tokens file not reloaded: %s", exc)
            return
        log.info("tokens file reloaded")

    def forget(self, connection: Connection) -> None:
        for task, known in list(self.connections.items()):
            if known is connection:
                del self.connections[task]

    async def shutdown(self) -> None:
        """Stop accepting, let transfers finish within the grace, end the rest."""
        self.closing = True
        if self._listener is not None:
            self._listener.close()
        for task, connection in list(self.connections.items()):
            if not connection.busy:
                task.cancel()
        pending = list(self.connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=LINGER_TOTAL + 1)


async def serve(config: Config, url: str, tokens: Tokens | None) -> None:
    store = Store(
        StorageConfig(
            url=url,
            chunk_size=config.chunk_size,
            staging_ttl=config.staging_ttl,
            grace=config.grace,
            timeout=config.storage_timeout,
            max_connections=config.valkey_connections,
            allow_persistence=config.allow_persistence,
        )
    )
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await store.check_server()
        server = Server(config, store, tokens)
        loop.add_signal_handler(signal.SIGHUP, server.reload_tokens)
        host, port = await server.start()
        print(f"valise listening on {host}:{port}", flush=True)
        await stop.wait()
        log.info("shutting down")
        await server.shutdown()
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        tokens = Tokens.load(config.tokens) if config.tokens else None
    except TokenFileError as exc:
        print(f"valise: refusing to start: {exc}", file=sys.stderr)
        return 2
    embedded = None
    url = config.valkey_url
    if url is None:
        embedded = EmbeddedValkey(maxmemory=config.valkey_maxmemory)
        embedded.start()
        url = embedded.url
        log.info("started a private valkey-server (persistence off, noeviction)")
    try:
        asyncio.run(serve(config, url, tokens))
    except MisconfiguredValkey as exc:
        print(f"valise: refusing to start: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"valise: cannot use Valkey: {exc.message}", file=sys.stderr)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
