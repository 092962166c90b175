"""Valise server: listen, accept, shut down; wire config to storage and connections.

The per-connection work (read loop, requests, replies, lingering close) is in
:mod:`connection`; the protocol is sans-IO in :mod:`protocol`; Valkey is
behind :mod:`storage`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

import uvloop

from protocol.errors import ErrorCode
from service import logs, workers
from service.allocator import keep_chunks_on_heap
from service.auth import TokenFileError, Tokens
from service.config import Config, parse_args
from service.connection import Connection
from service.deadline import fatal
from service.exporter import Exporter
from service.http import HttpConnection
from service.listener import Certificates, Listener, Peer
from service.looplag import LoopLag
from service.metrics import Metrics
from service.state import LINGER_TOTAL, READ_SIZE, Served, ServerState
from storage import (
    EmbeddedValkey,
    KeyFileError,
    MisconfiguredValkey,
    StorageError,
    Store,
    load_keys,
)

log = logging.getLogger("valise")


class Door(Protocol):
    """A connection of either door, as the server holds it."""

    busy: bool

    async def run(self, refuse: Any = None) -> None: ...


DoorType = Callable[[ServerState, asyncio.StreamReader, asyncio.StreamWriter, Peer], Door]


class Server:
    def __init__(
        self,
        config: Config,
        store: Store,
        tokens: Tokens | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        #: What the connections share; they get this, never the Server.
        self.state = ServerState(
            config, store, tokens, metrics if metrics is not None else Metrics()
        )
        self.metrics = self.state.metrics
        self.auth_failures = self.state.auth_failures
        self.loop_lag = LoopLag(self.metrics.registry)
        #: /metrics and /healthz when --metrics-port is set (a worker's parent serves them).
        self.exporter: Exporter | None = None
        #: The listeners' certificate, reloaded by SIGHUP.
        self.certificates = Certificates(config) if config.tls_cert else None
        self._listener = self._door(Connection)
        self._http = self._door(HttpConnection) if config.http_port is not None else None
        #: Where the HTTP door listens, once started (--http-port).
        self.http_address: tuple[str, int] | None = None

    @property
    def closing(self) -> bool:
        return self.state.closing

    @property
    def connections(self) -> dict[asyncio.Task[None], Served]:
        return self.state.connections

    async def start(self) -> tuple[str, int]:
        host, port = await self._listener.start(self.config.host, self.config.port)
        if self._http is not None and self.config.http_port is not None:
            self.http_address = await self._http.start(self.config.http_bind, self.config.http_port)
        self.metrics.observe_storage()
        self.loop_lag.start()
        if self.config.metrics_port is not None:
            self.exporter = Exporter(
                self.metrics.registry,
                self.store,
                sample_every=self.config.metrics_sample,
                unhealthy=lambda: "shutting down" if self.closing else None,
            )
            await self.exporter.start(self.config.metrics_host, self.config.metrics_port)
        return host, port

    def _door(self, door: DoorType) -> Listener:
        """A listener whose connections are served by ``door`` (the binary one, or HTTP)."""
        return Listener(
            self.config,
            functools.partial(self._accept, door),
            certificates=self.certificates,
            backlog=listen_backlog(self.config.max_connections),
            limit=2 * READ_SIZE,
        )

    async def _accept(
        self,
        door: DoorType,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        # Both doors count against one --max-connections (docs/http.md section 5).
        connection = door(self.state, reader, writer, peer)
        refuse = None
        if len(self.connections) >= self.config.max_connections:
            refuse = fatal(ErrorCode.BUSY, "too many connections; try again later")
        elif self.closing:
            refuse = fatal(ErrorCode.SHUTTING_DOWN, "server is shutting down")
        task = asyncio.current_task()
        assert task is not None
        if refuse is None:
            self.connections[task] = connection
        else:
            self.metrics.refused.labels(str(refuse.code)).inc()
        try:
            with self.metrics.connections.track_inprogress():
                await connection.run(refuse)
        finally:
            self.connections.pop(task, None)

    def reload(self) -> None:
        """SIGHUP: read the tokens file, the TLS certificate and the encryption keys again.

        A file that is malformed or unreadable keeps the old one (and the log
        says why); transfers in flight are not touched.
        """
        if self.certificates is not None:
            self.certificates.reload()
        if self.config.encryption_key_file is not None:
            self._reload_keys()
        if self.config.tokens is None:
            return
        try:
            self.state.tokens = Tokens.load(self.config.tokens)
        except TokenFileError as exc:
            log.error("tokens file not reloaded: %s", exc)
            return
        log.info("tokens file reloaded")

    def _reload_keys(self) -> None:
        try:
            keyring = self.store.sealer.reload()
        except KeyFileError as exc:
            log.error("encryption key file not reloaded, the old keys stay: %s", exc)
            return
        assert keyring is not None
        log.info(
            "encryption keys reloaded: %s seals; %s open", keyring.primary, ", ".join(keyring.ids)
        )

    async def shutdown(self) -> None:
        """Stop accepting, let transfers finish within the grace, end the rest."""
        self.state.closing = True
        for listener in (self._listener, self._http):
            if listener is not None:
                listener.close()
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
        await self.state.parked.close()
        await self.state.events.close()
        self.metrics.stop_observing()
        await self.loop_lag.stop()
        if self.exporter is not None:
            await self.exporter.close()


def listen_backlog(max_connections: int) -> int:
    """Room for a burst of connects: --max-connections, up to the kernel's somaxconn.

    asyncio's default of 100 made a burst of 800 connects wait out 1 s SYN
    retries while 1024 connections were allowed.
    """
    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        somaxconn = 4096  # Linux's default since 5.4; the kernel caps it anyway
    return max(100, min(max_connections, somaxconn))


def announce(
    host: str, port: int, workers: int = 1, *, http: tuple[str, int] | None = None
) -> None:
    """The one line users and tests parse; more words may follow HOST:PORT."""
    doors = f" http on {http[0]}:{http[1]}" if http is not None else ""
    suffix = f" ({workers} workers)" if workers > 1 else ""
    print(f"valise listening on {host}:{port}{doors}{suffix}", flush=True)


async def serve(
    config: Config,
    url: str,
    tokens: Tokens | None,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    store = Store(config.storage_config(url))
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await store.check_server()
        server = Server(config, store, tokens)
        loop.add_signal_handler(signal.SIGHUP, server.reload)
        host, port = await server.start()
        if ready is None:
            announce(host, port, http=server.http_address)
        else:
            ready(host, port)
        await stop.wait()
        log.info("shutting down")
        await server.shutdown()
    finally:
        await store.close()


def run(main: Coroutine[Any, Any, int | None], loop: str = "asyncio") -> int:
    """Run ``main`` in a fresh event loop; a start-up failure is one line and exit code 2."""
    try:
        if loop == "uvloop":
            return uvloop.run(main) or 0
        return asyncio.run(main) or 0
    except (OSError, ssl.SSLError) as exc:
        # Certificates that cannot be read, a port in use: say what, not a traceback.
        print(f"valise: cannot start: {exc}", file=sys.stderr)
    except (MisconfiguredValkey, KeyFileError) as exc:
        print(f"valise: refusing to start: {exc}", file=sys.stderr)
    except StorageError as exc:
        print(f"valise: cannot use Valkey: {exc.message}", file=sys.stderr)
    return 2


def work(url: str, tokens: Tokens | None, config: Config, ready: Callable[[str, int], None]) -> int:
    """One worker of ``--workers N`` (in a forked process): the single-process server."""
    return run(serve(config, url, tokens, ready), config.loop)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # Before the first chunk is allocated; forked workers inherit it.
    keep_chunks_on_heap()
    logs.configure(config.log_level, config.log_format, workers=config.workers)
    try:
        tokens = Tokens.load(config.tokens) if config.tokens else None
        if config.encryption_key_file is not None:
            load_keys(config.encryption_key_file)  # refused here, before any worker starts
    except (TokenFileError, KeyFileError) as exc:
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
        if config.workers == 1:
            return run(serve(config, url, tokens), config.loop)
        http = None if config.http_port is None else (config.http_bind, config.http_port)
        supervisor = workers.Supervisor(
            config,
            url,
            functools.partial(work, url, tokens),
            functools.partial(announce, http=http),
        )
        return run(supervisor.run())
    finally:
        # Only after every worker has exited: they finish their transfers first.
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    sys.exit(main())
