"""The valkey-py clients Valise uses, and the one place that patches valkey-py.

Single node: a bounded, blocking connection pool whose connections send a
command piece by piece (:class:`_PieceWriter`). A cluster: valkey-py's
cluster client, bounded by a gate (:class:`_BoundedCluster`), whose nodes
reuse their most recently freed connection (:class:`_LifoClusterNode`).

What is overridden of valkey-py 6.2 (requirements.txt pins it), and why, is
said on each class. They rely on private names of valkey-py:
``Connection._writer``, ``Connection.send_packed_command`` and
``pack_command``, ``ClusterNode._free``/``acquire_connection`` and the
module-level ``valkey.asyncio.cluster.ClusterNode`` that ``NodesManager``
builds nodes from. tests/unit/storage/test_clients.py fails when an upgrade
renames or reshapes any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import libvalkey
import valkey.asyncio as valkey_async
import valkey.asyncio.cluster as valkey_cluster
import valkey.exceptions as valkey_exc
from valkey.asyncio.connection import Connection
from valkey.asyncio.retry import Retry
from valkey.backoff import NoBackoff

from storage.config import StorageConfig
from storage.lane import PACK_IN_C_MAX, LeanValkey

#: Bytes of a command handed to the Valkey socket at a time.
SEND_PIECE = 1024 * 1024


#: Chunks are megabytes: read replies in 1 MiB pieces, not valkey-py's 64 KiB.
READ_SIZE = 1024 * 1024

#: Commands whose arguments are all of these types, none longer than
#: PACK_IN_C_MAX, are packed by libvalkey (bool is not int here).
_PACKED_IN_C = frozenset({str, int, bytes, memoryview})


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


def single_client(config: StorageConfig) -> Any:
    """valkey-py's asyncio client for one node, with our pool and connections;
    Lua scripts skip the pool's checkout checks (storage/lane.py)."""
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
    return LeanValkey(connection_pool=pool)  # its scripts take storage/lane.py's path


def reader_client(config: StorageConfig, block: float) -> Any:
    """A client for blocking reads (XREAD BLOCK up to ``block`` seconds) only.

    Its connections are its own: a reader waiting on a quiet stream never
    takes one from the pool that serves requests. Each reader in flight holds
    one connection (of the stream's node, in a cluster) while it waits.
    """
    tls: dict[str, Any] = {"ssl_ca_certs": config.tls_ca} if config.tls_ca else {}
    options: dict[str, Any] = {
        **tls,
        "socket_timeout": config.timeout + block,
        "socket_connect_timeout": min(config.timeout, 5.0),
        "retry": Retry(NoBackoff(), 0),
    }
    if config.cluster:
        return valkey_async.ValkeyCluster.from_url(config.url, reinitialize_steps=0, **options)
    return valkey_async.Valkey.from_url(config.url, **options)


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


def cluster_client(config: StorageConfig) -> Any:
    """valkey-py's cluster client, bounded and LIFO, with our connections."""
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
