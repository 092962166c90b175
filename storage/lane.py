"""The lean path for Lua scripts on one Valkey node: one EVALSHA, one timeout.

A small file is two script calls (COMMIT_ONE, then OPEN), and through
valkey-py's ``Script`` -> ``execute_command`` -> ``BlockingConnectionPool``
each one pays for much more than its round trip: the pool's condition and
its timeout, a health check that reads the socket under ``asyncio.timeout(0)``
(a read started and cancelled on every checkout), the ``Retry`` wrapper
(our retries are off: storage/calls.py retries), and a second timeout around
the read. Here a script call takes a connection from the same pool without
waiting when one is free (the pool's blocking wait only when none is),
sends the packed EVALSHA, reads the reply straight from the libvalkey
reader, all under one deadline, and hands the connection back.

What stays as it was: the pool and its bound (``--valkey-connections``),
the errors valkey-py raises (so storage/calls.py translates them as
before), NOSCRIPT answered by SCRIPT LOAD and a second EVALSHA, and a
connection cut short by an error or a cancel is closed, never reused. The
check the pool did on every checkout is replaced by a cheap one: a
connection the server closed while it was idle, or one with unread bytes,
is reconnected before use.

Single node only: a cluster keeps valkey-py's cluster client, whose
routing, redirects and gate (storage/clients.py) this does not redo.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import valkey.asyncio as valkey_async
import valkey.exceptions as valkey_exc
from valkey.commands.core import AsyncScript

from storage.bulk import Buffers, read_bulk


class LeanScript(AsyncScript):
    """A registered script that runs on the lean path (pipelines keep valkey-py's)."""

    async def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        if client is not None:
            return await super().__call__(keys, args, client)
        command = ("EVALSHA", self.sha, len(keys or ()), *(keys or ()), *(args or ()))
        lane: Lane = self.registered_client.lane  # type: ignore[attr-defined]
        reply = await lane.execute(command)
        if isinstance(reply, valkey_exc.NoScriptError):
            # Valkey restarted or SCRIPT FLUSHed: load it again, once.
            self.sha = await self.registered_client.script_load(self.script)
            reply = await lane.execute(("EVALSHA", self.sha, *command[2:]))
        if isinstance(reply, valkey_exc.ResponseError):
            raise reply
        return reply


class Lane:
    """Commands of one round trip on the pool's connections, without its checkout cost."""

    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout

    async def execute(self, command: tuple[Any, ...]) -> Any:
        """The command's reply; an error reply is returned (the connection is fine), a
        failed connection raised as valkey-py raises it (the connection is closed)."""
        return await self._on_connection(command, _parsed)

    async def get_bulk(self, name: str, buffers: Buffers | None = None) -> bytearray | None:
        """GET ``name``, its value received straight into a buffer (storage/bulk.py).

        Raises an error reply, as valkey-py's ``get`` does.
        """
        reply = await self._on_connection(
            ("GET", name), functools.partial(read_bulk, buffers=buffers)
        )
        if isinstance(reply, valkey_exc.ResponseError):
            raise reply
        value: bytearray | None = reply
        return value

    async def _on_connection(
        self, command: tuple[Any, ...], read: Callable[[Any, tuple[Any, ...]], Awaitable[Any]]
    ) -> Any:
        pool = self.pool
        if pool.can_get_connection():
            conn = pool.get_available_connection()
        else:
            conn = await pool.get_connection(command[0])  # waits, bounded by the pool
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await _ready(conn)
                    reply = await read(conn, command)
            except TimeoutError:
                await conn.disconnect(nowait=True)
                raise valkey_exc.TimeoutError("Timeout talking to Valkey") from None
            except OSError as exc:
                await conn.disconnect(nowait=True)
                raise valkey_exc.ConnectionError(f"Error talking to Valkey: {exc}") from exc
            except BaseException:
                # Cut short mid-reply (a cancel, a protocol error): never reuse it.
                await conn.disconnect(nowait=True)
                raise
        finally:
            await pool.release(conn)
        return reply


async def _parsed(conn: Any, command: tuple[Any, ...]) -> Any:
    """Send the command, read its reply with the connection's parser (libvalkey)."""
    await conn.send_packed_command(conn.pack_command(*command), False)
    return await conn._parser.read_response()


async def _ready(conn: Any) -> None:
    """Connected, and nothing left over on the socket (else connect afresh)."""
    stream = conn._reader
    if stream is not None and (stream.at_eof() or stream._buffer or stream.exception()):
        await conn.disconnect(nowait=True)
    if not conn.is_connected:
        await conn.connect()


class LeanValkey(valkey_async.Valkey):
    """valkey-py's single-node client whose registered scripts take the lean path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool: Any = self.connection_pool
        self.lane = Lane(pool, pool.timeout)

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        return LeanScript(self, script)
