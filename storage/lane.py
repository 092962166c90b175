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

Script calls issued in the same event-loop pass share one round trip
(auto-pipelining, as ioredis does it): they are packed together, written to
one connection in one write, and their replies read in order, each handed
to its caller's future. With many requests in flight this makes one send,
one checkout and one deadline per batch instead of per command. A batch
holds at most BATCH_COMMANDS commands or about BATCH_BYTES of arguments.
A caller cancelled before the batch is sent drops its command; one
cancelled after has its reply read and dropped, so the order holds for the
others. The deadline runs from the checkout, as before; when it passes,
every command still waiting fails with valkey-py's TimeoutError (they were
all issued in the same pass, so the deadline is theirs too); when the
connection fails otherwise, the command being read gets the error and
those after it a ConnectionError (storage/calls.py retries those of
idempotent calls). Chunk GETs (``get_bulk``) are not batched: each has a
connection to itself.

Single node only: a cluster keeps valkey-py's cluster client, whose
routing, redirects and gate (storage/clients.py) this does not redo.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import libvalkey
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
        self._open: _Batch | None = None  # the batch commands of this loop pass join
        self._running: set[asyncio.Task[None]] = set()

    async def execute(self, command: tuple[Any, ...]) -> Any:
        """The command's reply; an error reply is returned (the connection is fine), a
        failed connection raised as valkey-py raises it (the connection is closed)."""
        loop = asyncio.get_running_loop()
        packed, size = _prepare(command)
        batch = self._open
        if batch is None or batch.full(size):
            batch = self._open = _Batch()
            task = loop.create_task(self._run(batch))  # starts in the next loop pass
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        future = loop.create_future()
        batch.add(packed, future, size)
        return await future

    async def _run(self, batch: _Batch) -> None:
        """Send the batch on one connection, hand each reply to its caller."""
        if self._open is batch:
            self._open = None  # commands from now on start the next batch
        batch.drop_cancelled()
        if not batch.futures:
            return
        pool = self.pool
        try:
            conn = await _checkout(pool, "EVALSHA")
        except BaseException as exc:  # the pool's wait ran out (or a cancel)
            batch.fail(0, exc, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        try:
            await self._exchange(conn, batch)
        finally:
            await pool.release(conn)

    async def _exchange(self, conn: Any, batch: _Batch) -> None:
        futures = batch.futures
        read = 0
        sent = False
        failed: BaseException
        rest: BaseException
        try:
            async with asyncio.timeout(self.timeout):  # from checkout, as before
                await _ready(conn)
                await conn.send_packed_command(_packed(conn, batch.commands), False)
                sent = True
                parser = conn._parser
                for future in futures:
                    reply = await parser.read_response()
                    if not future.done():  # else its caller was cancelled: dropped
                        future.set_result(reply)
                    read += 1
            return
        except BaseException as exc:
            # Past the deadline, every command waiting shares it; else the one being
            # read gets the error (a socket's, a protocol error, a cancel), the rest _cut().
            failed = _as_valkey(exc)
            rest = failed if isinstance(exc, TimeoutError) else _cut()
        if not sent:  # nothing went out (say, a refused password): one fate for all
            rest = failed
        # Replies still on the way would land in the wrong hands: never reuse it.
        await conn.disconnect(nowait=True)
        batch.fail(read, failed, rest)
        if isinstance(failed, asyncio.CancelledError):
            raise failed

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
        conn = await _checkout(pool, command[0])
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    await _ready(conn)
                    reply = await read(conn, command)
            except BaseException as exc:
                # Cut short mid-reply (a timeout, a cancel, a protocol error): never reuse it.
                await conn.disconnect(nowait=True)
                error = _as_valkey(exc)
                if error is exc:
                    raise
                raise error from error.__cause__
        finally:
            await pool.release(conn)
        return reply


#: A batch closes at this many commands ...
BATCH_COMMANDS = 64
#: ... or about this many bytes of arguments (a small file's COMMIT_ONE carries it).
BATCH_BYTES = 1 << 20


class _Batch:
    """Commands issued in one loop pass and their callers' futures."""

    __slots__ = ("commands", "futures", "size")

    def __init__(self) -> None:
        #: Each command packed already, or its arguments (see _prepare).
        self.commands: list[bytes | tuple[Any, ...]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.size = 0

    def full(self, size: int) -> bool:
        return len(self.commands) >= BATCH_COMMANDS or (
            self.size + size > BATCH_BYTES and bool(self.commands)
        )

    def add(self, command: bytes | tuple[Any, ...], future: asyncio.Future[Any], size: int) -> None:
        self.commands.append(command)
        self.futures.append(future)
        self.size += size

    def drop_cancelled(self) -> None:
        """Callers cancelled before the send: their commands are not sent at all."""
        if any(future.done() for future in self.futures):
            kept = [
                (c, f) for c, f in zip(self.commands, self.futures, strict=True) if not f.done()
            ]
            self.commands = [c for c, _ in kept]
            self.futures = [f for _, f in kept]

    def fail(self, read: int, failed: BaseException, rest: BaseException) -> None:
        """The command being read gets ``failed``, those after it ``rest``."""
        for index in range(read, len(self.futures)):
            future = self.futures[index]
            if future.done():
                continue
            error = failed if index == read else rest
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)


def _packed(conn: Any, commands: list[bytes | tuple[Any, ...]]) -> list[bytes]:
    """The batch as one piece, so it goes out in one write (valkey-py's
    ``pack_commands`` cuts it every 6000 bytes: a write each). At most about
    BATCH_BYTES is copied; a lone command keeps its pieces (no copy). A
    command _prepare left unpacked is packed here by the connection."""
    if len(commands) == 1:
        command = commands[0]
        if type(command) is bytes:
            return [command]
        pieces: list[bytes] = conn.pack_command(*command)
        return pieces
    pieces = []
    for command in commands:
        if type(command) is bytes:
            pieces.append(command)
        else:
            pieces += conn.pack_command(*command)
    return [b"".join(pieces)]


def _as_valkey(exc: BaseException) -> BaseException:
    """A deadline or a socket error as valkey-py raises it (storage/calls.py
    translates those); anything else as it is."""
    if isinstance(exc, TimeoutError):
        return valkey_exc.TimeoutError("Timeout talking to Valkey")
    if isinstance(exc, OSError):
        error = valkey_exc.ConnectionError(f"Error talking to Valkey: {exc}")
        error.__cause__ = exc
        return error
    return exc


def _cut() -> Exception:
    return valkey_exc.ConnectionError("Valkey connection closed before this reply")


def _prepare(command: tuple[Any, ...]) -> tuple[bytes | tuple[Any, ...], int]:
    """``command`` packed now, when libvalkey packs it as valkey-py would, and
    about the bytes it carries (its strings and buffers), for a batch's bound.

    Packed in C when every argument is a str, an int, bytes or a memoryview
    of at most PACK_IN_C_MAX (bool is not int here) and the name has no space
    (valkey-py splits "CONFIG GET"): the bytes valkey-py's packer gives
    (tests/unit/storage/test_lane.py checks). One pass over the arguments
    does both, where the size and the connection's packer each took one.
    Anything else stays as it is, for the connection's packer at send time.
    """
    size = 0
    in_c = type(command[0]) is str and " " not in command[0]
    for arg in command:
        kind = type(arg)
        if kind is int:
            continue
        if kind in _SIZED:
            length = len(arg)
            size += length
            if length > PACK_IN_C_MAX or kind is bytearray:
                in_c = False
        else:
            in_c = False
    if in_c:
        return libvalkey.pack_command(command), size
    return command, size


_SIZED = frozenset({bytes, str, bytearray, memoryview})
#: Commands whose arguments are all str, int, bytes or memoryviews no longer than
#: this are packed by libvalkey: a larger value keeps valkey-py's packer, which
#: sends it without a copy (storage/clients.py).
PACK_IN_C_MAX = 64 * 1024


async def _checkout(pool: Any, command_name: str) -> Any:
    """A free connection of the pool at once; the pool's bounded wait only when none is."""
    if pool.can_get_connection():
        return pool.get_available_connection()
    return await pool.get_connection(command_name)


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
