"""One HTTP/1.1 client connection: requests in order, each answered, then close.

The HTTP door's counterpart of :mod:`service.connection`: it gets the shared
:class:`~service.state.ServerState`, never the Server; routes each request
(:mod:`service.http.routes`), authenticates it, hands it to the file
handlers, maps what they raise to a status (:mod:`service.http.errors`),
and writes one access-log record and the request metrics per request, as
the binary door does.

How a connection ends: quietly (the client closed, or went idle); after an
error response with ``Connection: close``, with a lingering close when the
client may still be sending a body it will never see read; short of the
announced Content-Length when a download fails after its status line (the
client sees a truncated transfer, never a whole-looking wrong file); or with
a reset when the client stopped reading our bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

import h11

from protocol.errors import ErrorCode, ProtocolError
from service.auth import OPEN, Grant
from service.http.errors import HttpError, WireError, error_body, status_of
from service.http.exchange import Exchange, Quiet, StoppedReading
from service.http.files import JSON, Files
from service.http.headers import bearer
from service.http.routes import Target, route
from service.http.tus import Tus, is_tus
from service.http.tusfields import RESUMABLE
from service.listener import Peer
from service.operations import Operations
from service.peer import certificate_name, closed_within, linger_bounded, reset
from service.state import FLUSH_AFTER_ERROR, LINGER_TOTAL, ServerState
from storage.errors import StorageError

log = logging.getLogger("valise")

#: The operation a route and method are, named as the binary door names its
#: requests: one set of metrics and access-log records for both doors.
OPS = {
    ("files", "GET"): "get",
    ("files", "HEAD"): "stat",
    ("files", "PUT"): "put",
    ("files", "DELETE"): "delete",
    ("list", "GET"): "list",
    ("list", "HEAD"): "list",
    ("upload", "POST"): "put",
    ("download", "GET"): "get",
    ("download", "HEAD"): "stat",
    # tus (docs/http.md section 7): OPTIONS is its HELLO, PATCH appends as RESUME's DATA.
    ("tus", "OPTIONS"): "hello",
    ("tus", "POST"): "put",
    ("tus", "HEAD"): "stat",
    ("tus", "PATCH"): "resume",
    ("tus", "DELETE"): "delete",
}

#: The failures a request can end with that the client is told about.
ANSWERED = (HttpError, ProtocolError, StorageError)


class End(enum.Enum):
    """How the connection ends once no further request will be served."""

    CLOSE = "close"
    #: An error response to a client that may still be sending: lingering close.
    LINGER = "linger"
    #: The client stopped reading: reset, drop our buffers.
    RESET = "reset"


def _now() -> float:
    return time.monotonic()


class HttpConnection:
    def __init__(
        self,
        state: ServerState,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        self.state = state
        self.config = state.config
        #: The client's address (behind a balancer, from its PROXY header).
        self.peer = peer
        self.ops = Operations(state)
        self.files = Files(self.ops)
        self.tus = Tus(self.ops)
        self.reader = reader
        self.writer = writer
        self.ex = Exchange(self.config, reader, writer, closing=lambda: state.closing)
        #: True while a request is in progress (shutdown waits for it).
        self.busy = False
        #: The bytes of a lingering close's error response.
        self._last = b""

    async def run(self, refuse: ProtocolError | None = None) -> None:
        # How long the last bytes we wrote may take to leave after close().
        flush = self.config.idle_timeout
        end = End.CLOSE
        try:
            if refuse is None:
                end = await self._serve()
            else:
                end = await self._refuse(refuse)
            if end is End.LINGER:
                flush = FLUSH_AFTER_ERROR
                await linger_bounded(self.state, self, self.reader, self.writer, self._last)
        except asyncio.CancelledError:
            pass  # shutdown gave up waiting; the socket is closed below
        finally:
            if end is End.RESET:
                reset(self.writer)
            self.writer.close()
        if end is not End.RESET:
            await closed_within(self.writer, flush)

    async def _refuse(self, error: ProtocolError) -> End:
        """A connection over --max-connections (or at shutdown): 503 to its first request.

        It counts among the lingering connections, bounded like them; past
        the bound the 503 goes out at once, before any request is read.
        """
        self.ex.closing = True
        if self.state.lingering >= self.config.max_connections:
            with contextlib.suppress(h11.LocalProtocolError):
                self.writer.write(self._encode_error(error))
            return End.CLOSE
        self.state.lingering += 1
        try:
            async with asyncio.timeout(LINGER_TOTAL):
                return await self._serve(error)
        except TimeoutError:
            return End.CLOSE
        finally:
            self.state.lingering -= 1

    async def _serve(self, refuse: ProtocolError | None = None) -> End:
        while True:
            try:
                event = await self.ex.next_event()
            except (Quiet, ConnectionError, OSError):
                return End.CLOSE
            except HttpError as exc:  # a malformed or late request head
                self.ex.closing = True
                return await self._answer(exc) or End.CLOSE
            except asyncio.CancelledError:
                # Cancelled by shutdown while idle: close like a quiet end.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return End.CLOSE
            if not isinstance(event, h11.Request):
                return End.CLOSE  # the client closed, or sent what no request starts with
            end = await self._exchange(event, refuse)
            if end is not None:
                return end
            if refuse is not None:
                return End.CLOSE
            if not self.ex.next_cycle():
                # A body the handler had no use for may still be coming: linger.
                return End.LINGER if self.ex.body_unread else End.CLOSE

    async def _exchange(self, request: h11.Request, refuse: ProtocolError | None) -> End | None:
        """Serve one request; how the connection ends if it must, else None."""
        ex = self.ex
        ex.begin(request)
        self.busy = True
        op, key, namespace = "other", None, ""
        started = _now()
        outcome = "disconnected"
        target: Target | None = None
        try:
            if refuse is not None:
                raise refuse
            tus = is_tus(ex.target)
            if tus:
                ex.always.append(RESUMABLE)
            target = route(ex.method, ex.target)
            # A tus upload id is a secret handle, not a key: never logged.
            op, key = OPS[target.name, target.method], None if tus else target.key
            self.state.metrics.request_started(op)
            grant = await self._authenticate()
            namespace = grant.namespace
            await (self.tus if tus else self.files).handle(ex, target, grant)
            outcome = "ok"
            return None
        except ANSWERED as exc:
            outcome = str(exc.code)
            return await self._answer(exc)
        except StoppedReading:
            outcome = str(ErrorCode.TIMEOUT)
            return End.RESET
        except (Quiet, ConnectionError, OSError):
            return End.CLOSE
        except Exception:
            log.exception("internal error")
            outcome = str(ErrorCode.INTERNAL)
            return await self._answer(HttpError(500, ErrorCode.INTERNAL, "internal server error"))
        finally:
            self.busy = False
            self._record(target, op, key, namespace, started, outcome)

    def _record(
        self,
        target: Target | None,
        op: str,
        key: str | None,
        namespace: str,
        started: float,
        outcome: str,
    ) -> None:
        """One access-log record, and the request metrics, per request."""
        self.state.access.record(
            peer=str(self.peer),
            namespace=namespace,
            op=op,
            key=key,
            nbytes=self.ex.nbytes,
            started=started,
            outcome=outcome,
        )
        if target is None:
            self.state.metrics.request_started(op)  # balanced: a request that never routed
        self.state.metrics.request_ended(op, outcome, _now() - started, self.ex.nbytes)

    async def _authenticate(self) -> Grant:
        """The request's grant: its Bearer token, or its client certificate (mutual TLS)."""
        if not self.ops.authenticating:
            return OPEN
        token = bearer(self.ex.fields.get("authorization"))
        try:
            return await self.ops.authenticate(token, certificate_name(self.writer), self.peer.host)
        except ProtocolError as exc:
            raise HttpError(401, exc.code, exc.message) from None

    def _encode_error(self, error: WireError) -> bytes:
        headers = [JSON, *(error.headers if isinstance(error, HttpError) else ())]
        status = status_of(error)
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="valise"'))
        return self.ex.encode(status, headers, error_body(error))

    async def _answer(self, error: WireError) -> End | None:
        """Tell the client; how the connection ends if it must, else None."""
        ex = self.ex
        if ex.head_sent:
            # The status line is out: end short of the Content-Length we announced.
            log.warning("response cut short: %s", error.code)
            return End.CLOSE
        unread = ex.body_unread and not ex.h11.they_are_waiting_for_100_continue
        if ex.body_unread or ex.h11.their_state is h11.ERROR:
            ex.closing = True  # the rest of the request will not be read
        try:
            data = self._encode_error(error)
        except h11.LocalProtocolError:
            return End.CLOSE  # nothing can be said in this state
        if unread:
            self._last = data
            return End.LINGER
        self.writer.write(data)
        try:
            await ex.drain()
        except StoppedReading:
            return End.RESET
        return None
