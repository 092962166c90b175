"""One HTTP connection's bytes, through h11: events in, responses out, within limits.

h11 (python-hyper's sans-IO HTTP/1.1) parses and frames; this module is the
thin asyncio layer around it, as uvicorn's ``protocols/http/h11_impl.py`` and
hypercorn's ``protocol/h11.py`` are: it reads only when h11 needs data, under
the deadlines of docs/http.md section 5 (idle, request head, stalled body,
--min-rate), yields to the event loop every MAX_BURST events, and writes a
response's head only with its first body bytes, so a failure before those
can still be answered with a clean error.

The handlers see one :class:`Exchange` per connection: the request in
progress (``fields``, ``read()``, ``trailers``) and the means to answer it
(``respond``, or ``start`` / ``send`` / ``finish`` for a streamed body).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

import h11

from protocol.errors import ErrorCode
from service.config import Config
from service.connection import MAX_BURST
from service.http.errors import REASONS, HttpError
from service.http.headers import Fields, http_date
from service.peer import RateFloor, drain
from service.state import READ_SIZE

#: Largest request head (request line and fields), and largest trailer block.
MAX_HEAD = 32 * 1024
#: Most header fields a request may carry.
MAX_FIELDS = 100

Header = tuple[str, str]


class Quiet(Exception):
    """The connection ends with no response: the client went idle, or away."""


class StoppedReading(Exception):
    """The client took none of our bytes for the idle timeout: reset it."""


def _now() -> float:
    return time.monotonic()


class Exchange:
    def __init__(
        self,
        config: Config,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        #: True once the server is shutting down: every response then closes.
        self.shutting_down = closing
        #: Answer with Connection: close from now on (an unread body, an error).
        self.closing = False
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._burst = 0
        #: When the first byte of the request head now awaited arrived.
        self._head_since: float | None = None
        self._date = (0, "")
        self.begin(None)

    # -- the request ------------------------------------------------------

    def begin(self, request: h11.Request | None) -> None:
        """A new request: forget everything about the last one."""
        self.request = request
        self.method = request.method.decode("ascii") if request else ""
        self.fields = Fields(request.headers if request else [])
        self.trailers: Fields | None = None
        #: File bytes of the request or response body so far (the access log's).
        self.nbytes = 0
        #: True once the response's status line is on its way: an error can no
        #: longer be answered, only the connection cut.
        self.head_sent = False
        self._pending: h11.Response | None = None
        self._rate = RateFloor(self.config.min_rate, self.config.min_rate_window)
        self._head_since = None
        #: Fields every response to this request carries (tus: Tus-Resumable).
        self.always: list[Header] = []
        if request is not None and self.content_length == 0:
            # No body: its end is already known, and the request is whole.
            end = self.h11.next_event()
            assert isinstance(end, h11.EndOfMessage)
            self.trailers = Fields([])

    @property
    def target(self) -> str:
        assert self.request is not None
        return self.request.target.decode("ascii")

    @property
    def content_length(self) -> int | None:
        """The declared body size; None for a chunked body (0: no body at all)."""
        if "chunked" in (self.fields.get("transfer-encoding") or "").lower():
            return None
        value = self.fields.get("content-length")
        # h11 has checked it: digits, and any repeats identical.
        return int(value.split(",")[0]) if value else 0

    @property
    def body_unread(self) -> bool:
        """The client may still be sending this request's body."""
        return self.h11.their_state is h11.SEND_BODY

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """h11's next event, reading when it needs data; a malformed request is an HttpError."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise _malformed(exc.error_status_hint) from None
            if event is h11.NEED_DATA:
                self._burst = 0
                await self._receive()
                continue
            self._burst += 1
            if self._burst >= MAX_BURST:
                self._burst = 0
                await asyncio.sleep(0)  # let the other connections run
            if isinstance(event, h11.Request):
                _check_head(event)
            return cast(h11.Event | type[h11.PAUSED], event)

    async def _receive(self) -> None:
        """Read more, within the deadline of what we are waiting for."""
        now = _now()
        body = self.h11.their_state is h11.SEND_BODY
        if body:
            # Inside a body: no silence longer than a frame's time, and the rate floor.
            timeout, late = self.config.frame_timeout, "request body stalled"
        else:
            if self._head_since is None and self.h11.trailing_data[0]:
                self._head_since = now
            if self._head_since is None:
                timeout, late = self.config.idle_timeout, ""
            else:
                # Slowloris: a request head that has started must be complete in time.
                timeout = self._head_since + self.config.frame_timeout - now
                late = "request head not completed in time"
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                data = await self.reader.read(READ_SIZE)
        except TimeoutError:
            if not late:
                raise Quiet from None  # idle between requests: just close
            raise HttpError(408, ErrorCode.TIMEOUT, late) from None
        if not data and (body or self._head_since is not None):
            raise Quiet  # gone in the middle of a request
        if body and not self._rate.add(len(data), _now() - now):
            raise HttpError(408, ErrorCode.TIMEOUT, "upload slower than the server's minimum rate")
        if data and self._head_since is None and not body:
            self._head_since = now
        self.h11.receive_data(data)

    async def read(self) -> bytes | None:
        """The next piece of the request body; None at its end (trailers are then set)."""
        if self.trailers is not None:
            return None  # the body has ended (or there was none)
        if self.h11.they_are_waiting_for_100_continue:
            self._write(
                self.h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                )
            )
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                self.nbytes += len(event.data)
                return event.data
            if isinstance(event, h11.EndOfMessage):
                self.trailers = Fields(event.headers)
                return None
            raise HttpError(400, ErrorCode.BAD_REQUEST, "request body ended early")

    # -- the response -----------------------------------------------------

    def _response(self, status: int, headers: list[Header]) -> h11.Response:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, http_date(now))
        fields = [("Date", self._date[1]), *headers, *self.always]
        if self.closing or self.shutting_down():
            fields.append(("Connection", "close"))
        return h11.Response(status_code=status, headers=fields, reason=REASONS.get(status, b""))

    def encode(self, status: int, headers: list[Header], body: bytes = b"") -> bytes:
        """A whole response as bytes (h11's state moves on as if it were sent)."""
        headers = [*headers, ("Content-Length", str(len(body)))]
        out = [self.h11.send(self._response(status, headers))]
        if body and self.method != "HEAD":
            out.append(self.h11.send(h11.Data(data=body)))
        out.append(self.h11.send(h11.EndOfMessage()))
        self.head_sent = True
        return b"".join(out)

    async def respond(self, status: int, headers: list[Header], body: bytes = b"") -> None:
        self._write(self.encode(status, headers, body))
        await self.drain()

    def start(self, status: int, headers: list[Header]) -> None:
        """A response with a streamed body: its head leaves with the first bytes."""
        self._pending = self._response(status, headers)

    async def send(self, piece: bytes | memoryview) -> None:
        self._flush_head()
        # h11 only counts a body piece; it is written as it is, never copied.
        parts = self.h11.send_with_data_passthrough(h11.Data(data=cast(bytes, piece)))
        assert parts is not None
        for part in parts:
            self.writer.write(part)
        self.nbytes += len(piece)
        await self.drain()

    async def finish(self) -> None:
        self._flush_head()
        self._write(self.h11.send(h11.EndOfMessage()))
        await self.drain()

    def _flush_head(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.head_sent = True
            self._write(self.h11.send(pending))

    def _write(self, data: bytes) -> None:
        if data:
            self.writer.write(data)

    async def drain(self) -> None:
        """Wait for the client to take what we wrote; a reader that stops is cut off."""
        try:
            await drain(self.writer, self.config.idle_timeout)
        except TimeoutError:
            raise StoppedReading from None

    def next_cycle(self) -> bool:
        """Ready the connection for the next request; False when it must close."""
        if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        self.begin(None)
        return True


def _check_head(request: h11.Request) -> None:
    """Bound a request head h11 found whole in one read (it bounds only an incomplete one)."""
    if len(request.headers) > MAX_FIELDS:
        raise HttpError(431, ErrorCode.BAD_REQUEST, f"more than {MAX_FIELDS} header fields")
    size = len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)
    if size > MAX_HEAD:
        raise _malformed(431)


def _malformed(hint: int) -> HttpError:
    """h11's verdict on a request it cannot parse; its words (they may quote the
    request, and so a key) stay out of the answer and the logs."""
    if hint == 431:
        return HttpError(431, ErrorCode.BAD_REQUEST, f"request head larger than {MAX_HEAD} bytes")
    if hint == 501:
        return HttpError(501, ErrorCode.BAD_REQUEST, "unsupported Transfer-Encoding")
    return HttpError(400, ErrorCode.BAD_REQUEST, "malformed HTTP/1.1 request")
