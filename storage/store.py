"""The storage boundary: the only module family that talks to Valkey.

:class:`Store` owns the connection pool and the metadata operations (STAT,
DELETE, LIST, the commit); :mod:`storage.writer` and :mod:`storage.reader`
move the chunks. valkey-py's defaults are not ours: the pool is bounded and
blocks (up to the storage timeout) instead of raising, the socket timeout fits
a full chunk, and retries are ours, applied only to idempotent commands.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import libvalkey
import valkey.asyncio as valkey_async
import valkey.asyncio.cluster as valkey_cluster
import valkey.exceptions as valkey_exc
from valkey.asyncio.connection import Connection
from valkey.asyncio.retry import Retry
from valkey.backoff import NoBackoff

from storage import keys, observe, scripts
from storage.errors import (
    FileNotFound,
    MisconfiguredValkey,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from storage.info import FileInfo

log = logging.getLogger("valise.storage")

T = TypeVar("T")

#: Attempts for an idempotent command (a chunk SET, a read, the commit).
ATTEMPTS = 3
#: Keys per PEXPIRE/UNLINK batch.
BATCH = 512
#: Bytes of a command handed to the Valkey socket at a time.
SEND_PIECE = 1024 * 1024
#: Commands of one batch in flight at once on a cluster.
BATCH_CONCURRENCY = 8
#: On one node, a file of one chunk no larger than this is written and
#: committed in one script, and read with its info (scripts.COMMIT_ONE, OPEN).
SMALL_FILE = 256 * 1024
#: Seconds the INFO memory figures behind the PUT-time room check are reused.
MEMORY_CACHE = 0.5


@dataclass(frozen=True, slots=True)
class StorageConfig:
    url: str
    chunk_size: int
    staging_ttl: int
    grace: int
    timeout: float = 30.0
    max_connections: int = 64
    allow_persistence: bool = False
    #: CA bundle for a valkeys:// URL (TLS to Valkey).
    tls_ca: str | None = None
    #: ``url`` names one node of a Valkey Cluster (docs/decisions/0006).
    cluster: bool = False
    #: Cluster only: seconds an idempotent command keeps retrying a failover.
    failover_wait: float = 10.0


def translate(exc: Exception) -> StorageError:
    """A valkey-py exception as one of ours (PHI: no payload is ever echoed)."""
    if isinstance(exc, StorageError):
        return exc
    # valkey-py turns an "OOM ..." reply into OutOfMemoryError; inside a script
    # the prefix may survive in the message instead.
    if isinstance(exc, valkey_exc.OutOfMemoryError) or "OOM" in str(exc)[:40]:
        return StorageFull("Valkey is out of memory")
    if isinstance(exc, _CLUSTER_TRANSIENT):
        return StorageUnavailable("the Valkey cluster is failing over or resharding")
    if isinstance(exc, valkey_exc.ConnectionError | valkey_exc.TimeoutError | OSError):
        return StorageUnavailable("Valkey is unreachable or too slow")
    if isinstance(exc, asyncio.TimeoutError):
        return StorageUnavailable("Valkey did not answer in time")
    return StorageError(f"Valkey error: {type(exc).__name__}")


# A dropped connection is worth another try; a timeout is not: Valkey is slow,
# and a retry would multiply the wait past --storage-timeout.
# In a cluster, CLUSTERDOWN (a failover in progress), TRYAGAIN (a slot being
# migrated) and a redirect loop are passing states, worth another try too.
_CLUSTER_TRANSIENT = (
    valkey_exc.ClusterDownError,
    valkey_exc.TryAgainError,
    valkey_exc.MasterDownError,
    valkey_exc.ClusterError,
    # Not a ValkeyError: no reachable node, or a slot without a primary yet.
    valkey_exc.ValkeyClusterException,
    # A write reached a primary just demoted to replica.
    valkey_exc.ReadOnlyError,
)
#: CONFIG GET at start-up, on every node.
_CHECKED_CONFIG = (
    "maxmemory-policy",
    "save",
    "appendonly",
    "proto-max-bulk-len",
    "repl-diskless-sync",
    "repl-diskless-load",
)
#: Everything valkey-py raises.
_VALKEY_ERRORS = (valkey_exc.ValkeyError, valkey_exc.ValkeyClusterException, OSError)
_TRANSIENT = (valkey_exc.ConnectionError, ConnectionError, *_CLUSTER_TRANSIENT)


async def call(
    op: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    kind: str = "meta",
    window: float = 0.0,
) -> T:
    """Run one Valkey operation, retrying it only when it is safe to run twice.

    A transient failure is retried ATTEMPTS times, and beyond that for up to
    ``window`` seconds (a cluster failover), with backoff. ``kind`` names the
    operation for :mod:`storage.observe` (metrics).
    """
    attempts = ATTEMPTS if idempotent else 1
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await op()
        except _VALKEY_ERRORS as exc:
            elapsed = time.monotonic() - started
            again = attempt < attempts or (idempotent and elapsed < window)
            if isinstance(exc, _TRANSIENT) and again:
                await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                continue
            error = translate(exc)
            observe.report(kind, elapsed, error.code.value)
            raise error from exc
        observe.report(kind, time.monotonic() - started, "ok")
        # valkey-py (asyncio.timeout(0) in can_read_destructive) can swallow a
        # cancel that lands at the wrong moment on 3.11; honour it here.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return result


class Store:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        # valkey-py's annotations mix its sync and async return types and refuse
        # bytes keys; typed as Any here, and only here, behind our own methods.
        self.client: Any = _cluster_client(config) if config.cluster else _single_client(config)
        self._timers: set[asyncio.TimerHandle] = set()
        self._releases: set[asyncio.Task[None]] = set()
        self._memory: list[tuple[int, int]] = []
        self._memory_at = -MEMORY_CACHE
        self._memory_refresh: asyncio.Future[None] | None = None
        self._commit = self.client.register_script(scripts.COMMIT)
        self._commit_one = self.client.register_script(scripts.COMMIT_ONE)
        self._open = self.client.register_script(scripts.OPEN)
        self._delete = self.client.register_script(scripts.DELETE)
        self._list = self.client.register_script(scripts.LIST)
        self._usage = self.client.register_script(scripts.USAGE)

    async def run(
        self, op: Callable[[], Awaitable[T]], *, idempotent: bool, kind: str = "meta"
    ) -> T:
        """:func:`call`, riding out a cluster failover of up to ``failover_wait`` s."""
        window = self.config.failover_wait if self.config.cluster else 0.0
        return await call(op, idempotent=idempotent, kind=kind, window=window)

    async def close(self) -> None:
        # Pending releases are left to their TTLs (at most grace seconds away).
        for handle in self._timers:
            handle.cancel()
        pending = [*self._releases, *([self._memory_refresh] if self._memory_refresh else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.client.aclose()
        if not self.config.cluster:
            # A pool passed in explicitly is not closed by the client.
            await self.client.connection_pool.disconnect()

    # -- start-up -------------------------------------------------------

    def _nodes(self, *, primaries: bool) -> list[dict[str, Any]]:
        """Per-node command options: one node alone, or each node of a cluster."""
        if not self.config.cluster:
            return [{}]
        nodes = self.client.get_primaries() if primaries else self.client.get_nodes()
        return [{"target_nodes": node} for node in nodes]

    async def check_server(self) -> None:
        """Refuse a Valkey (any cluster node) that would evict chunks or write scans to disk."""
        try:
            if self.config.cluster:
                try:
                    await self.client.initialize()
                except valkey_exc.ValkeyClusterException as exc:
                    raise MisconfiguredValkey(f"--valkey-cluster: {exc}") from exc
            for target in self._nodes(primaries=False):
                config: dict[str, str] = {}
                for name in _CHECKED_CONFIG:
                    config.update(_decode_map(await self.client.config_get(name, **target)))
                replication = await self.client.info("replication", **target)
                self._check_config(config)
                self._check_replication(config, replication)
        except valkey_exc.ResponseError as exc:
            if isinstance(exc, _CLUSTER_TRANSIENT):
                raise translate(exc) from exc
            log.warning("cannot read Valkey CONFIG (%s); skipping safety checks", exc)
        except _VALKEY_ERRORS as exc:
            raise translate(exc) from exc

    def _check_config(self, config: dict[str, str]) -> None:
        policy = config.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            raise MisconfiguredValkey(
                f"Valkey maxmemory-policy is {policy!r}: eviction would silently delete chunks "
                "of stored files. Set it to 'noeviction'."
            )
        persistent = config.get("save", "") != "" or config.get("appendonly", "no") == "yes"
        if persistent and not self.config.allow_persistence:
            raise MisconfiguredValkey(
                "Valkey persistence is on (save or appendonly): scans would be written to disk. "
                "Turn it off, or pass --allow-persistence."
            )
        max_bulk = int(config.get("proto-max-bulk-len", str(512 * 1024 * 1024)))
        if self.config.chunk_size > max_bulk:
            raise MisconfiguredValkey(
                f"--chunk-size {self.config.chunk_size} exceeds "
                f"Valkey proto-max-bulk-len {max_bulk}"
            )

    def _check_replication(self, config: dict[str, str], replication: dict[str, Any]) -> None:
        """A primary with replicas, or a replica, must sync through memory, not an RDB file."""
        replicated = replication.get("role") == "slave" or int(
            replication.get("connected_slaves", 0)
        )
        on_disk = config.get("repl-diskless-sync", "yes") != "yes" or (
            config.get("repl-diskless-load", "disabled") == "disabled"
        )
        if replicated and on_disk and not self.config.allow_persistence:
            raise MisconfiguredValkey(
                "Valkey replication goes through an RDB file on disk: scans would be written "
                "to disk. Set repl-diskless-sync yes and repl-diskless-load on-empty-db "
                "on every node, or pass --allow-persistence."
            )

    async def health(self) -> None:
        """Raise StorageUnavailable unless Valkey (every primary, in a cluster) answers PING."""
        targets = (
            {"target_nodes": valkey_async.ValkeyCluster.PRIMARIES} if self.config.cluster else {}
        )
        if not await self.run(lambda: self.client.ping(**targets), idempotent=False):
            raise StorageUnavailable("Valkey did not answer PING")

    async def check_writable(self, size: int | None) -> None:
        """Before accepting a PUT: Valkey answers and has room for a declared size.

        The memory figures are cached for MEMORY_CACHE seconds: a busy server
        accepting thousands of small PUTs a second asks Valkey twice a second.
        """
        if time.monotonic() - self._memory_at > MEMORY_CACHE:
            # One refresh at a time: the PUTs that arrive meanwhile share it.
            if self._memory_refresh is None:
                self._memory_refresh = asyncio.ensure_future(self._refresh_memory())
                self._memory_refresh.add_done_callback(self._memory_refreshed)
            await asyncio.shield(self._memory_refresh)
        if not _has_room(self._memory, size or 0):
            raise StorageFull("Valkey has no room for this upload")

    async def _refresh_memory(self) -> None:
        async def memory() -> list[dict[str, Any]]:
            return [
                await self.client.info("memory", **target) for target in self._nodes(primaries=True)
            ]

        self._memory = [
            (int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
            for info in await self.run(memory, idempotent=True)
        ]
        self._memory_at = time.monotonic()

    def _memory_refreshed(self, task: asyncio.Future[None]) -> None:
        self._memory_refresh = None
        if not task.cancelled():
            task.exception()  # retrieved: each waiter has raised it already

    # -- metadata -------------------------------------------------------

    async def stat(self, namespace: str, key: str) -> FileInfo:
        meta = keys.NamespaceKeys(namespace).meta(key)
        raw = await self.run(lambda: self.client.hget(meta, "info"), idempotent=True)
        if raw is None:
            raise FileNotFound("no such file")
        return FileInfo.loads(raw)

    async def current_vid(self, namespace: str, key: str) -> str | None:
        meta = keys.NamespaceKeys(namespace).meta(key)
        vid = await self.run(lambda: self.client.hget(meta, "vid"), idempotent=True)
        return vid.decode() if vid is not None else None

    async def commit(self, namespace: str, info: FileInfo, ttl: int) -> None:
        """Make ``info`` the visible version of its key, atomically; free the one it replaces."""
        ns = keys.NamespaceKeys(namespace)
        await self._run_commit(
            self._commit,
            [ns.meta(info.key), ns.index, ns.expiry_index],
            _commit_args(ns, info, ttl),
        )

    async def commit_one(
        self,
        namespace: str,
        info: FileInfo,
        ttl: int,
        chunk: memoryview,
        digest: bytes,
        chunk_ttl_ms: int,
    ) -> None:
        """One node only: write a one-chunk file's chunk and digest, and commit it,
        in one round trip (scripts.COMMIT_ONE)."""
        ns = keys.NamespaceKeys(namespace)
        names = [
            ns.meta(info.key),
            ns.index,
            ns.expiry_index,
            keys.chunk_key(info.vid, 0),
            keys.digests_key(info.vid),
        ]
        args = [*_commit_args(ns, info, ttl), chunk, digest, chunk_ttl_ms]
        await self._run_commit(self._commit_one, names, args)

    async def _run_commit(self, script: Any, names: list[Any], args: list[Any]) -> None:
        previous = await self.run(
            lambda: script(keys=names, args=args),
            idempotent=True,  # idempotent by vid; see scripts.py
            kind="commit",
        )
        if previous:
            await self.release(FileInfo.loads(previous))

    async def open(self, namespace: str, key: str) -> tuple[FileInfo, bytes | None, bytes | None]:
        """One node only: a file's info, its digest list and (when no larger than
        SMALL_FILE) its first chunk, in one round trip (scripts.OPEN)."""
        meta = keys.NamespaceKeys(namespace).meta(key)
        args = [keys.CHUNK_PREFIX, keys.DIGESTS_PREFIX, SMALL_FILE]
        reply = await self.run(
            lambda: self._open(keys=[meta], args=args), idempotent=True, kind="chunk_read"
        )
        if not reply:
            raise FileNotFound("no such file")
        info, digests, head = reply
        return FileInfo.loads(info), digests, head

    async def delete(self, namespace: str, key: str) -> bool:
        ns = keys.NamespaceKeys(namespace)
        raw = await self.run(
            lambda: self._delete(
                keys=[ns.meta(key), ns.index, ns.expiry_index], args=[key.encode()]
            ),
            idempotent=False,
        )
        if not raw:
            return False
        await self.release(FileInfo.loads(raw))
        return True

    async def list(
        self, namespace: str, prefix: str, cursor: str | None, limit: int
    ) -> tuple[list[FileInfo], str | None]:
        """One page of live files whose key starts with ``prefix``, in byte order."""
        ns = keys.NamespaceKeys(namespace)
        low = prefix.encode()
        if cursor is not None and cursor.encode() >= low:
            start = b"(" + cursor.encode()
        else:
            start = b"[" + low
        # UTF-8 never contains 0xFF, so prefix + 0xFF bounds every key that extends it.
        stop = b"(" + low + b"\xff" if low else b"+"
        reply = await self.run(
            lambda: self._list(keys=[ns.index], args=[start, stop, limit, ns.meta_prefix]),
            idempotent=True,
        )
        last, scanned, *infos = reply
        files = [FileInfo.loads(raw) for raw in infos]
        more = last is not None and int(scanned) >= limit
        return files, last.decode() if more else None

    async def usage(self, page: int = 1000) -> dict[str, tuple[int, int]]:
        """Live files and their bytes per namespace, for metrics.

        Walks every namespace's index, ``page`` entries per script call (each
        call is short, so Valkey stays responsive): seconds for millions of
        files. Sample it in the background; never run it per request.
        """
        names: set[bytes] = set()

        async def scan() -> None:
            async for name in self.client.scan_iter(match=keys.INDEX_PATTERN, _type="zset"):
                names.add(name)

        await self.run(scan, idempotent=True)
        usage: dict[str, tuple[int, int]] = {}
        for name in sorted(names):
            namespace = keys.namespace_of_index(name)
            usage[namespace] = await self._usage_of(keys.NamespaceKeys(namespace), page)
        return usage

    async def _usage_of(self, ns: keys.NamespaceKeys, page: int) -> tuple[int, int]:
        files = size = 0
        start = b"-"
        while True:
            walk = functools.partial(
                self._usage, keys=[ns.index], args=[start, page, ns.meta_prefix]
            )
            reply = await self.run(walk, idempotent=True)
            last, scanned, page_files, page_bytes = reply
            files += int(page_files)
            size += int(page_bytes)
            if last is None or int(scanned) < page:
                return files, size
            start = b"(" + last

    async def release(self, info: FileInfo) -> None:
        """Free a replaced or deleted version once reads in flight have had ``grace`` s.

        An expired key is reclaimed only when Valkey's active expiry samples it;
        among many keys with long TTLs that can take minutes, and freed chunks
        would pile up to maxmemory. So the bytes are unlinked by us: at once
        when grace is 0, else by a timer. The TTL shortened to ``grace`` is the
        fallback if this process dies before its timer runs.
        """
        names = [keys.chunk_key(info.vid, i) for i in range(info.chunks)]
        names.append(keys.digests_key(info.vid))
        try:
            if self.config.grace == 0:
                await self.unlink_many(names)
                return
            await self.expire_many(names, self.config.grace * 1000, "LT")
        except StorageError:
            log.warning("could not release a replaced version; it expires on its own")
            return
        loop = asyncio.get_running_loop()
        self._timers = {h for h in self._timers if h.when() > loop.time()}  # drop fired ones
        self._timers.add(loop.call_later(self.config.grace, self._unlink_later, names))

    def _unlink_later(self, names: Sequence[str]) -> None:
        task = asyncio.create_task(self._unlink_quietly(names))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _unlink_quietly(self, names: Sequence[str]) -> None:
        try:
            await self.unlink_many(names)
        except StorageError:
            log.warning("could not unlink a released version; it expires on its own")

    # -- bulk helpers ---------------------------------------------------

    async def batch(self, queue: Callable[[Any], None]) -> Sequence[Any]:
        """The commands ``queue`` adds to a pipeline-like object, in one round trip.

        One node: a non-transactional pipeline. A cluster: the commands run
        concurrently one by one, so each follows its own MOVED/ASK redirect
        (valkey-py's cluster pipeline fails on a redirect during resharding).
        Raises the first error, like ``pipeline.execute()``.
        """
        if not self.config.cluster:
            async with self.client.pipeline(transaction=False) as pipe:
                queue(pipe)
                results: Sequence[Any] = await pipe.execute()
                return results
        recorder = _Recorder()
        queue(recorder)
        # A few at a time: each command in flight holds a connection of its node.
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            async with gate:
                return await getattr(self.client, name)(*args, **kwargs)

        replies = await asyncio.gather(
            *(one(*command) for command in recorder.calls), return_exceptions=True
        )
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    async def expire_many(self, names: Iterable[str], ttl_ms: int, mode: str | None) -> None:
        """PEXPIRE every key in ``names`` (idempotent, batched, one round trip per batch)."""
        flags = {"LT": {"lt": True}, "GT": {"gt": True}}.get(mode or "", {})
        for batch in _batches(names):

            def queue(pipe: Any, batch: list[str] = batch) -> None:
                for name in batch:
                    pipe.pexpire(name, ttl_ms, **flags)

            await self.run(functools.partial(self.batch, queue), idempotent=True)

    async def unlink_many(self, names: Iterable[str]) -> None:
        for batch in _batches(names):

            async def run(batch: list[str] = batch) -> None:
                await self.client.unlink(*batch)

            await self.run(run, idempotent=True)


class _Recorder:
    """Stands in for a pipeline: records ``pipe.command(*args, **kwargs)`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


def _commit_args(ns: keys.NamespaceKeys, info: FileInfo, ttl: int) -> list[Any]:
    """ARGV of scripts.COMMIT."""
    return [
        info.dumps(),
        info.vid,
        ttl * 1000,
        info.key.encode(),
        int(info.expires_at * 1000),
        int(time.time() * 1000),
        ns.meta_prefix,
    ]


def _has_room(nodes: Sequence[tuple[int, int]], size: int) -> bool:
    """Room for ``size`` bytes, given (used, maxmemory) per primary.

    Chunks spread over every primary, so a cluster has room while the free
    memory of all its primaries adds up to the upload, and no primary is full
    (a full one refuses every chunk that hashes to it). No maxmemory: no limit.
    """
    limited = [(used, limit) for used, limit in nodes if limit]
    if any(used >= limit for used, limit in limited):
        return False
    free = sum(limit - used for used, limit in limited)
    return not limited or size < free


#: Chunks are megabytes: read replies in 1 MiB pieces, not valkey-py's 64 KiB.
READ_SIZE = 1024 * 1024

#: Commands whose arguments are all of these types, none longer than
#: PACK_IN_C_MAX, are packed by libvalkey (bool is not int here).
_PACKED_IN_C = frozenset({str, int, bytes, memoryview})
PACK_IN_C_MAX = 64 * 1024


class _PieceWriter:
    """Mixin for valkey-py connections: how a packed command goes to the socket.

    - Piece by piece: valkey-py hands a SET's header and the value (a
      memoryview) to ``StreamWriter.writelines``, which on CPython 3.11 joins
      them first: a copy of every chunk, and a second chunk-sized buffer held
      while it is sent. Written a megabyte at a time with a drain in between,
      the value goes to the socket from our buffer and asyncio copies at most
      a megabyte of it.
    - Small commands packed in C: every argument a str, an int, bytes or a
      memoryview of at most ``PACK_IN_C_MAX``, ``libvalkey.pack_command`` builds the
      command in one call, as valkey-py's sync client does (its asyncio
      client packs in Python: ~5 % of a small file's server CPU). A larger
      value keeps valkey-py's packer, which sends it without a copy.
    - Without a task per command: valkey-py wraps each send in
      ``asyncio.wait_for``, which starts a new Task (about 8 % of a small
      file's server CPU). The write timeout now covers each drain that has to
      wait, which is the only place a send can.
    """

    _writer: asyncio.StreamWriter
    socket_timeout: float | None

    def pack_command(self, *args: Any) -> list[bytes]:
        for arg in args:
            kind = type(arg)
            if kind not in _PACKED_IN_C or (kind is not int and len(arg) > PACK_IN_C_MAX):
                packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
                return packed
        # valkey-py's rule: a first argument with spaces ("CONFIG GET") is split.
        name = args[0].encode() if isinstance(args[0], str) else args[0]
        return [libvalkey.pack_command((*name.split(), *args[1:]))]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # valkey-py's send_packed_command, less the wait_for; errors as it raises them.
        conn: Any = self
        if not conn.is_connected:
            await conn.connect()
        elif check_health:
            await conn.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            await self._send_packed_command(command)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise valkey_exc.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise valkey_exc.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # A send cut short leaves the connection mid-command: never reuse it.
            await conn.disconnect(nowait=True)
            raise

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        for piece in command:
            # A megabyte at a time: asyncio copies what the socket cannot take
            # at once into its buffer, so at most that much is held twice.
            view = memoryview(piece)
            for at in range(0, len(view), SEND_PIECE):
                self._writer.write(view[at : at + SEND_PIECE])
                await self._drain()

    async def _drain(self) -> None:
        transport = self._writer.transport
        if transport.get_write_buffer_size() == 0 and not transport.is_closing():
            return  # all in the kernel: nothing to wait for, no timer to arm
        async with asyncio.timeout(self.socket_timeout):
            await self._writer.drain()


def _writing_pieces(connection_class: type[Any]) -> type[Any]:
    return type(f"Valise{connection_class.__name__}", (_PieceWriter, connection_class), {})


def _single_client(config: StorageConfig) -> Any:
    tls: dict[str, Any] = {"ssl_ca_certs": config.tls_ca} if config.tls_ca else {}
    pool = valkey_async.BlockingConnectionPool.from_url(
        config.url,
        **tls,
        max_connections=config.max_connections,
        timeout=config.timeout,
        socket_timeout=config.timeout,
        socket_connect_timeout=min(config.timeout, 5.0),
        retry=Retry(NoBackoff(), 0),
        socket_read_size=READ_SIZE,
        health_check_interval=30,
    )
    pool.connection_class = _writing_pieces(pool.connection_class)
    return valkey_async.Valkey(connection_pool=pool)


class _BoundedCluster(valkey_async.ValkeyCluster):
    """ValkeyCluster that waits for a free connection instead of raising.

    valkey-py's cluster client raises MaxConnectionsError when a node's
    connections are all busy; the single-node pool blocks instead. A gate of
    ``max_connections`` commands in flight (each uses at most one connection
    per node) restores blocking, bounded by the storage timeout.
    """

    def __init__(self, *args: Any, gate: int, wait: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Semaphore(gate)
        self._wait = wait

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait):
                await self._gate.acquire()
        except TimeoutError:
            raise valkey_exc.ConnectionError("no Valkey connection free in time") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._gate.release()


class _LifoClusterNode(valkey_cluster.ClusterNode):
    """A cluster node that reuses its most recently freed connection.

    valkey-py's node rotates through all its connections (FIFO). Each
    connection's reply parser keeps its largest buffer (a whole chunk) until
    its next read, so rotating held one chunk per connection ever opened: a
    768 MiB download left the server at 581 MiB. Last in, first out keeps
    the big buffers on the few connections in use at once, as the
    single-node pool does.
    """

    def acquire_connection(self) -> Any:
        try:
            return self._free.pop()
        except IndexError:
            return super().acquire_connection()


def _cluster_client(config: StorageConfig) -> Any:
    # NodesManager builds nodes from this module-level name.
    valkey_cluster.ClusterNode = _LifoClusterNode  # type: ignore[misc]
    tls: dict[str, Any] = {"ssl_ca_certs": config.tls_ca} if config.tls_ca else {}
    client = _BoundedCluster.from_url(
        config.url,
        **tls,
        gate=config.max_connections,
        wait=config.timeout,
        # Headroom over the gate for pipelines, which bypass it.
        max_connections=2 * config.max_connections,
        socket_timeout=config.timeout,
        socket_connect_timeout=min(config.timeout, 5.0),
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        # A MOVED patches the one slot; never drop every connection (valkey-py
        # does that every 5th MOVED by default, in-flight commands included).
        reinitialize_steps=0,
    )
    # from_url takes no socket_read_size; the node connections are made from
    # these kwargs when the cluster is first contacted.
    kwargs = client.nodes_manager.connection_kwargs
    kwargs["socket_read_size"] = READ_SIZE
    kwargs["connection_class"] = _writing_pieces(kwargs.get("connection_class", Connection))
    return client


def sha1_digest(data: memoryview) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


#: Below this a thread hand-off costs more than the hash itself.
THREAD_HASH_MIN = 256 * 1024


async def sha1_of(data: memoryview) -> bytes:
    """SHA-1 of a chunk, in a worker thread when large (hashlib releases the GIL)."""
    if len(data) < THREAD_HASH_MIN:
        return sha1_digest(data)
    return await asyncio.to_thread(sha1_digest, data)


def new_vid() -> str:
    return secrets.token_hex(16)


def _batches(names: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for name in names:
        batch.append(name)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _decode_map(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }
