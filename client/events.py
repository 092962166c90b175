"""Change events: SUBSCRIBE and the EVENT frames that follow (docs/protocol.md section 6.3).

Two levels:

- :func:`subscribe` opens one connection, subscribes, and returns a
  :class:`Subscription`: the OK's ``cursor`` and ``complete``, then each
  event as a dict (``id``, ``event`` and the event's fields). A quiet
  subscription is checked with a PING every ``keepalive`` seconds; a server
  that answers nothing within ``timeout`` counts as gone.
- :class:`EventStream` is the async iterator most programs want: it
  reconnects with backoff after any transient failure and subscribes again
  with ``since`` set to the last event it handed out, so nothing is missed
  or repeated while it runs. When the server says the replay is not
  complete (it no longer keeps some of the events), the stream yields a
  :class:`Gap` before the events that follow: catch up with LIST.

A subscribed connection carries nothing else, so each subscription has a
connection of its own, apart from any :class:`~client.aio.AsyncClient`.

Standard library only, Python 3.8 syntax: client/ is vendored on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl as ssl_mod
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import tls
from .backoff import ceiling
from .connection import Connection
from .errors import ProtocolError, RequestTimeout, TransientError, ValiseError
from .stopping import run_until_stopped
from .subparsers import events as add_parser
from .wire import FrameType

__all__ = [
    "KEEPALIVE",
    "EventStream",
    "Gap",
    "NotOffered",
    "Subscription",
    "add_parser",
    "run",
    "subscribe",
]

#: Seconds of silence after which a subscription PINGs the server.
KEEPALIVE = 30.0

if TYPE_CHECKING:  # aliases for annotations only: Python 3.8 cannot subscript these
    Event = dict[str, Any]
    #: Called with the error and the seconds until the next attempt.
    OnRetry = Callable[[ValiseError, float], None]


class NotOffered(ValiseError):
    """The server does not offer change events (HELLO's ``features`` lacks ``subscribe``)."""

    default_code = "not_offered"


class Gap:
    """Events may have been missed: the server no longer kept all of them.

    ``cursor`` is the subscription's cursor. Catch up with LIST (the events
    that follow the gap are still delivered).
    """

    __slots__ = ("cursor",)

    def __init__(self, cursor: str | None) -> None:
        self.cursor = cursor

    def __repr__(self) -> str:
        return f"Gap(cursor={self.cursor!r})"


class Subscription:
    """One subscribed connection: ``cursor``, ``complete``, then events."""

    def __init__(
        self, conn: Connection, cursor: str | None, complete: bool, keepalive: float
    ) -> None:
        self._conn = conn
        #: The namespace's latest event before the subscription (None: none).
        self.cursor = cursor
        #: False when some events after ``since`` were no longer kept.
        self.complete = complete
        self._keepalive = keepalive
        self._timeout = conn.timeout

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.next()

    async def next(self) -> Event:
        """The next event; raises on a fatal ERROR or a lost connection."""
        pinged = False
        while True:
            # Quiet for `keepalive`: PING; then silent for `timeout`: gone.
            self._conn.timeout = self._timeout if pinged else self._keepalive
            try:
                frame = await self._conn.read_frame()
            except RequestTimeout:
                if pinged:
                    raise
                await self._conn.send_control(FrameType.PING, {})
                pinged = True
                continue
            pinged = False
            if frame.type is FrameType.EVENT:
                event = frame.json()
                if not isinstance(event.get("id"), str) or not isinstance(event.get("event"), str):
                    raise ProtocolError("EVENT without a string 'id' and 'event'")
                return event
            # OK: a PING's echo. ERROR: raised (always fatal here).
            self._conn.reply_of(frame)

    async def close(self) -> None:
        await self._conn.aclose()

    def abort(self) -> None:
        self._conn.abort()


async def subscribe(
    host: str,
    port: int,
    prefix: str = "",
    since: str | None = None,
    *,
    token: str | None = None,
    ssl: ssl_mod.SSLContext | None = None,
    timeout: float = 30.0,
    keepalive: float = KEEPALIVE,
    client_name: str = "valise-python",
) -> Subscription:
    """Connect, HELLO, SUBSCRIBE; the subscription, ready to yield events."""
    conn = await Connection.open(host, port, io_timeout=timeout, ssl=ssl)
    try:
        info = await conn.greet(client_name, token, tls=ssl is not None)
        features = info.get("features")
        if not isinstance(features, list) or "subscribe" not in features:
            raise NotOffered("this server does not offer change events")
        body: dict[str, Any] = {"prefix": prefix}
        if since is not None:
            body["since"] = since
        await conn.send_control(FrameType.SUBSCRIBE, body)
        reply = await conn.read_reply()
        cursor, complete = reply.get("cursor"), reply.get("complete")
        if not (cursor is None or isinstance(cursor, str)) or not isinstance(complete, bool):
            raise ProtocolError("SUBSCRIBE reply needs 'cursor' (str|null) and 'complete' (bool)")
    except BaseException:
        conn.abort()
        raise
    return Subscription(conn, cursor, complete, keepalive)


class EventStream:
    """Events under ``prefix``, across reconnections; yields event dicts and :class:`Gap`.

    ``since`` starts after that event (else at the subscription). After a
    transient failure (:class:`~client.errors.TransientError`: connection
    lost, server restarting, ``timeout`` for a reader that fell behind) it
    waits ``backoff`` seconds, doubling up to ``max_backoff``, and subscribes
    again after the last event it handed out. ``on_retry`` hears of each
    failure. Other errors (``unauthorized``, :class:`NotOffered`) are raised.
    """

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str = "",
        since: str | None = None,
        *,
        token: str | None = None,
        ssl: ssl_mod.SSLContext | None = None,
        timeout: float = 30.0,
        keepalive: float = KEEPALIVE,
        backoff: float = 0.2,
        max_backoff: float = 30.0,
        client_name: str = "valise-python",
        on_retry: OnRetry | None = None,
    ) -> None:
        self.host, self.port, self.prefix = host, port, prefix
        #: The last event handed out (or the first subscription's cursor):
        #: where a new subscription starts.
        self.last_id = since
        self._options: dict[str, Any] = {
            "token": token,
            "ssl": ssl,
            "timeout": timeout,
            "keepalive": keepalive,
            "client_name": client_name,
        }
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_retry = on_retry
        self._sub: Subscription | None = None
        #: The current subscription's OK: ``cursor`` and ``complete``.
        self.cursor: str | None = None
        self.complete = True

    async def connect(self) -> Subscription:
        """Subscribe now (retrying transient failures); its ``cursor`` and
        ``complete`` tell whether the caller should catch up first."""
        attempt = 0
        while True:
            try:
                sub = await subscribe(
                    self.host, self.port, self.prefix, self.last_id, **self._options
                )
            except TransientError as exc:
                attempt += 1
                await self.pause(exc, attempt)
                continue
            self._sub = sub
            self.cursor, self.complete = sub.cursor, sub.complete
            if self.last_id is None:
                self.last_id = sub.cursor
            return sub

    async def pause(self, exc: ValiseError, attempt: int) -> None:
        """Wait before attempt ``attempt`` + 1 after ``exc`` (``on_retry`` hears of it)."""
        delay = ceiling(attempt, self.backoff, self.max_backoff) * random.uniform(0.5, 1.0)
        if self.on_retry is not None:
            self.on_retry(exc, delay)
        await asyncio.sleep(delay)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event | Gap:
        while True:
            if self._sub is None:
                had = self.last_id
                sub = await self.connect()
                if had is not None and not sub.complete:
                    return Gap(sub.cursor)
            assert self._sub is not None
            try:
                event = await self._sub.next()
            except TransientError as exc:
                self._sub.abort()
                self._sub = None
                await self.pause(exc, 1)
                continue
            self.last_id = event["id"]
            return event

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# -- the `valise events` subcommand ------------------------------------------


def _line(item: Event | Gap, as_json: bool) -> str:
    if isinstance(item, Gap):
        if as_json:
            return json.dumps({"event": "gap", "cursor": item.cursor})
        return "-- some events were no longer kept: catch up with `valise ls` --"
    if as_json:
        return json.dumps(item, ensure_ascii=False)
    if item.get("event") == "stored":
        detail = f"  {item.get('size')} bytes  sha1 {item.get('sha1')}"
    else:
        detail = f"  version {item.get('version')}"
    return f"{item['id']}  {item.get('event')}  {item.get('key')}{detail}"


def run(args: argparse.Namespace, host: str, port: int) -> int:
    """Print events until SIGINT or SIGTERM (exit 0), or a fatal error."""

    def retry(exc: ValiseError, delay: float) -> None:
        if not args.quiet:
            print(f"valise: {exc}; reconnecting in {delay:.1f} s", file=sys.stderr)

    async def main() -> int:
        stream = EventStream(
            host,
            port,
            args.prefix,
            args.since,
            token=args.token,
            ssl=tls.from_args(args),
            timeout=args.timeout,
            max_backoff=args.retry_max_wait,
            client_name="valise-cli",
            on_retry=retry,
        )

        async def follow() -> None:
            await stream.connect()
            if args.since is not None and not stream.complete:
                print(_line(Gap(stream.cursor), args.json), flush=True)
            if not args.quiet and not args.json:
                print(f"subscribed; cursor {stream.cursor}", file=sys.stderr)
            async for item in stream:
                print(_line(item, args.json), flush=True)

        try:
            await run_until_stopped(follow())
        finally:
            await stream.close()
        return 0

    return asyncio.run(main())
