"""The Store: every Valkey command Valise sends goes through one of its methods.

It owns the client (:mod:`storage.clients`), the metadata operations (STAT,
DELETE, LIST, the commit) and the chunk operations the chunk writer and
reader use (:meth:`Store.set_chunk`, :meth:`Store.get_chunk`, batches of
PEXPIRE/UNLINK). Whether Valkey is one node or a cluster is decided here and
nowhere else. valkey-py's defaults are not ours: the pool is bounded and
blocks (up to the storage timeout) instead of raising, the socket timeout fits
a full chunk, and retries are ours (:mod:`storage.calls`), applied only to
idempotent commands.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import valkey.asyncio as valkey_async
import valkey.exceptions as valkey_exc

from storage import checks, keyfile, keys, observe, scripts
from storage.batch import batches, run_batch
from storage.bulk import Buffers
from storage.calls import CLUSTER_TRANSIENT, VALKEY_ERRORS, call, translate
from storage.clients import cluster_client, single_client
from storage.config import StorageConfig
from storage.crypto import MAX_OVERHEAD, clear_info
from storage.errors import (
    FileNotFound,
    MisconfiguredValkey,
    PasswordRefused,
    StorageError,
    StorageFull,
    StorageUnavailable,
    Superseded,
)
from storage.events import EventLog, deleted_event_head, stored_event
from storage.info import FileInfo, commit_args
from storage.uploads import UploadStore

log = logging.getLogger("valise.storage")

T = TypeVar("T")

#: On one node, a file of one chunk no larger than this is written and
#: committed in one script, and read with its info (scripts.COMMIT_ONE, OPEN).
SMALL_FILE = 256 * 1024
#: Seconds the INFO memory figures behind the PUT-time room check are reused.
MEMORY_CACHE = 0.5


class Store(UploadStore):
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        # valkey-py's annotations mix its sync and async return types and refuse
        # bytes keys; typed as Any here, and only here, behind our own methods.
        self.client: Any = cluster_client(config) if config.cluster else single_client(config)
        #: Seals and opens stored values (on with --encryption-key-file; SIGHUP reloads).
        self.sealer = keyfile.sealer(config.encryption_key_file)
        self._timers: set[asyncio.TimerHandle] = set()
        #: Valkey failed the last call: the next success is worth a log line.
        self._down = False
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
        self._register_upload_scripts()
        #: The namespaces' change events, read back (storage.events).
        self.events = EventLog(self)

    async def run(
        self, op: Callable[[], Awaitable[T]], *, idempotent: bool, kind: str = "meta"
    ) -> T:
        """:func:`call`, riding out a cluster failover of up to ``failover_wait`` s."""
        window = self.config.failover_wait if self.config.cluster else 0.0
        try:
            result = await call(op, idempotent=idempotent, kind=kind, window=window)
        except StorageUnavailable as exc:
            if not self._down:
                # One line when Valkey goes away, not only a failed request each.
                self._down = True
                log.warning("Valkey is unavailable: %s", exc.message)
            raise
        if self._down:
            self._down = False
            log.warning("Valkey is available again")
        return result

    async def close(self) -> None:
        # Pending releases are left to their TTLs (at most grace seconds away).
        for handle in self._timers:
            handle.cancel()
        pending = [*self._releases, *([self._memory_refresh] if self._memory_refresh else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.events.close()
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
                for name in checks.CHECKED_CONFIG:
                    config.update(checks.decode_map(await self.client.config_get(name, **target)))
                replication = await self.client.info("replication", **target)
                checks.check_config(self.config, config)
                checks.check_replication(self.config, config, replication)
        except valkey_exc.ResponseError as exc:
            if isinstance(exc, CLUSTER_TRANSIENT):
                raise translate(exc) from exc
            log.warning("cannot read Valkey CONFIG (%s); skipping safety checks", exc)
        except VALKEY_ERRORS as exc:
            error = translate(exc)
            # At start, say which Valkey and what failed (never the password).
            where = _where(self.config.url)
            if isinstance(error, PasswordRefused):
                if urlsplit(self.config.url).password is None:
                    message = (
                        f"Valkey at {where} needs a password (NOAUTH): give it in --valkey-url"
                    )
                else:
                    message = f"Valkey at {where} refused the password (WRONGPASS)"
                raise PasswordRefused(message) from exc
            if type(error) is StorageUnavailable:
                reason = str(exc).split(". ")[-1].rstrip(".") if "connecting" in str(exc) else ""
                detail = f": {reason}" if reason else ""
                raise StorageUnavailable(f"cannot reach Valkey at {where}{detail}") from exc
            raise error from exc

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
        if not checks.has_room(self._memory, size or 0):
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
        return self.sealer.loads(namespace, raw, key)

    async def current_vid(self, namespace: str, key: str) -> str | None:
        meta = keys.NamespaceKeys(namespace).meta(key)
        vid = await self.run(lambda: self.client.hget(meta, "vid"), idempotent=True)
        return vid.decode() if vid is not None else None

    async def commit(
        self, namespace: str, info: FileInfo, ttl: int, *, if_absent: bool = False
    ) -> bool:
        """Make ``info`` the visible version of its key, atomically; free the one it
        replaces. With ``if_absent``, only if the key has no file at that moment
        (else :class:`FileExists`, and nothing changed). True when it replaced a file."""
        ns = keys.NamespaceKeys(namespace)
        stored, sealed = self.sealer.stored_forms(namespace, info)
        return await self._run_commit(
            self._commit,
            [ns.meta(info.key), ns.index, ns.expiry_index, ns.events],
            [
                *commit_args(ns, info, stored, ttl, if_absent),
                *self.events.publish_args(stored_event(info, sealed)),
            ],
        )

    async def commit_one(
        self,
        namespace: str,
        info: FileInfo,
        ttl: int,
        chunk: memoryview,
        digest: bytes | memoryview,
        chunk_ttl_ms: int,
        *,
        if_absent: bool = False,
    ) -> bool:
        """One node only: write a one-chunk file's chunk and digest, and commit it,
        in one round trip (scripts.COMMIT_ONE). True when it replaced a file."""
        ns = keys.NamespaceKeys(namespace)
        names = [
            ns.meta(info.key),
            ns.index,
            ns.expiry_index,
            keys.chunk_key(info.vid, 0),
            keys.digests_key(info.vid),
            ns.events,
        ]
        stored, sealed = self.sealer.stored_forms(namespace, info)
        args = [
            *commit_args(ns, info, stored, ttl, if_absent),
            chunk,
            digest,
            chunk_ttl_ms,
            *self.events.publish_args(stored_event(info, sealed)),
        ]
        return await self._run_commit(self._commit_one, names, args)

    async def _run_commit(self, script: Any, names: list[Any], args: list[Any]) -> bool:
        """Any of the commit scripts: the stored event counted, the replaced version
        freed. True when the commit replaced a file (a retried commit returns the
        same previous version, so this holds across a retry too)."""
        previous = await self.run(
            lambda: script(keys=names, args=args),
            idempotent=True,  # idempotent by vid; see scripts.py
            kind="commit",
        )
        if previous is None:  # COMMIT_RESUMABLE only: the upload has another owner now
            raise Superseded("another connection resumed this upload")
        observe.report_event("stored")
        if previous:
            await self.release(clear_info(previous))
        return bool(previous)

    async def open(self, namespace: str, key: str) -> tuple[FileInfo, bytes | None, bytes | None]:
        """One node only: a file's info, its digest list and (when no larger than
        SMALL_FILE) its first chunk, in one round trip (scripts.OPEN)."""
        meta = keys.NamespaceKeys(namespace).meta(key)
        args = [keys.CHUNK_PREFIX, keys.DIGESTS_PREFIX, SMALL_FILE + MAX_OVERHEAD]
        reply = await self.run(
            lambda: self._open(keys=[meta], args=args), idempotent=True, kind="chunk_read"
        )
        if not reply:
            raise FileNotFound("no such file")
        info, digests, head = reply
        return self.sealer.loads(namespace, info, key), digests, head

    async def delete(self, namespace: str, key: str) -> bool:
        ns = keys.NamespaceKeys(namespace)
        names = [ns.meta(key), ns.index, ns.expiry_index, ns.events]
        args = [key.encode(), *self.events.publish_args(deleted_event_head(key))]
        raw = await self.run(lambda: self._delete(keys=names, args=args), idempotent=False)
        if not raw:
            return False
        observe.report_event("deleted")
        await self.release(clear_info(raw))
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
        files = [self.sealer.loads(namespace, raw) for raw in infos]
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
        names = keys.chunk_keys(info.vid, info.chunks)
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

    # -- chunks ---------------------------------------------------------

    @property
    def one_trip_small_files(self) -> bool:
        """One node: a small file is written with its commit, and read with its info,
        in one round trip (scripts.COMMIT_ONE, scripts.OPEN). A cluster spreads the
        chunks of a file over its shards, so a script cannot reach them."""
        return not self.config.cluster

    async def set_chunk(
        self, name: str, data: memoryview | bytes, ttl_ms: int, *, renew: Sequence[str] = ()
    ) -> None:
        """Store one chunk's bytes under ``name`` (idempotent: retried on a lost link);
        meanwhile push the TTL of the chunks ``renew`` names forward to ``ttl_ms``."""
        write = self.run(
            lambda: self.client.set(name, data, px=ttl_ms), idempotent=True, kind="chunk_write"
        )
        if not renew:
            await write
            return
        await asyncio.gather(write, self.expire_many(renew, ttl_ms, "GT"))

    async def get_chunk(
        self, name: str, buffers: Buffers | None = None
    ) -> bytes | bytearray | None:
        """One chunk's bytes, or None when it is gone. On one node the reply is
        received straight into a buffer of ``buffers`` (storage/bulk.py); a
        cluster's client routes the GET and gives bytes."""
        if self.config.cluster:
            get = functools.partial(self.client.get, name)
        else:  # single_client's LeanValkey (storage/clients.py)
            get = functools.partial(self.client.lane.get_bulk, name, buffers)
        chunk: bytes | bytearray | None = await self.run(get, idempotent=True, kind="chunk_read")
        return chunk

    async def open_for_read(
        self, namespace: str, key: str
    ) -> tuple[FileInfo, bytes | None, bytes | None]:
        """A file's info, with its digests and small first chunk when one trip can bring them."""
        if self.one_trip_small_files:
            return await self.open(namespace, key)
        return await self.stat(namespace, key), None, None

    # -- bulk helpers ---------------------------------------------------

    async def batch(self, queue: Callable[[Any], None]) -> Sequence[Any]:
        """:func:`storage.batch.run_batch` on this store's client."""
        return await run_batch(self.client, self.config.cluster, queue)

    async def expire_many(self, names: Iterable[str], ttl_ms: int, mode: str | None) -> None:
        """PEXPIRE every key in ``names`` (idempotent, batched, one round trip per batch)."""
        flags = {"LT": {"lt": True}, "GT": {"gt": True}}.get(mode or "", {})
        for batch in batches(names):

            def queue(pipe: Any, batch: list[str] = batch) -> None:
                for name in batch:
                    pipe.pexpire(name, ttl_ms, **flags)

            await self.run(functools.partial(self.batch, queue), idempotent=True)

    async def unlink_many(self, names: Iterable[str]) -> None:
        for batch in batches(names):

            async def run(batch: list[str] = batch) -> None:
                await self.client.unlink(*batch)

            await self.run(run, idempotent=True)


def _where(url: str) -> str:
    """The Valkey a URL names, as host:port or a socket path: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"
