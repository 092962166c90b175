"""``--workers N``: N forked processes serve one port (SO_REUSEPORT); the parent supervises.

The parent serves no client. It reserves the port (so ``--port 0`` gives
every worker the same one), forks the workers, forwards SIGTERM, SIGINT and
SIGHUP to them, restarts one that dies (with a growing delay, so a crash
loop does not spin) and, with ``--metrics-port``, serves ``/metrics`` (the
sum of the workers' multiprocess files) and ``/healthz``. It returns only
after every worker has exited, so a private Valkey outlives them all.

Workers are forked from the parent's running event loop (a restart happens
long after that loop started). The child drops the parent's loop and signal
plumbing first, as CPython 3.12's own at-fork hook in asyncio does, never
touches the parent's objects again, and ends with ``os._exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from service import exporter, metrics
from service.config import Config
from service.state import LINGER_TOTAL
from storage import StorageConfig, Store, die_with_parent

log = logging.getLogger("valise.workers")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Restart delay after a worker dies: doubles with each quick death, up to the max.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: A worker that lived this long before dying starts the backoff over.
STABLE_AFTER = 60.0
#: Valkey connections the parent needs (health PINGs, usage walks).
PARENT_VALKEY_CONNECTIONS = 4

#: What a worker runs: (its config, a "now listening" callback) -> exit code.
Work = Callable[[Config, Callable[[str, int], None]], int]
#: Prints the one "valise listening on HOST:PORT" line: (host, port, workers).
Announce = Callable[[str, int, int], None]


@dataclass
class Worker:
    slot: int
    pid: int
    started: float
    #: True once it listens; False if it exited first.
    ready: asyncio.Future[bool]


def reserve_port(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bind, never listen, SO_REUSEPORT sockets on ``host``: the port all workers share.

    A listening socket would take its share of connections; a bound one only
    keeps the port ours. A fixed port is first bound without SO_REUSEPORT,
    so a port held by anyone else fails here, as it would with one worker,
    instead of silently joining their group.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    reserved: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            if port:
                with _socket(family, kind, proto, reuse_port=False) as probe:
                    probe.bind(address)
            sock = _socket(family, kind, proto, reuse_port=True)
            reserved.append(sock)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]  # --port 0: the first bind picks it for all
    except OSError:
        for sock in reserved:
            sock.close()
        raise
    return reserved, port


def _socket(family: int, kind: int, proto: int, *, reuse_port: bool) -> socket.socket:
    """Options as asyncio.start_server sets them, so the workers can join."""
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(self, config: Config, url: str, work: Work, announce: Announce) -> None:
        self.config = config
        self.storage = config.storage_config(url)
        self.work = work
        self.announce = announce
        self.workers: dict[int, Worker] = {}
        self.stopping = False
        self.worker_config = config
        self._serving = False
        self._clean = True
        self._failures = [0] * config.workers
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        self._stopped = asyncio.Event()
        self._gone = asyncio.Event()
        self._reserved: list[socket.socket] = []
        self._metrics_dir: Path | None = None
        self._exporter: exporter.Exporter | None = None
        self._store: Store | None = None
        self._stats: metrics.SupervisorMetrics | None = None
        self._parent = os.getpid()

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean shutdown, 2 if the workers cannot start."""
        loop = asyncio.get_running_loop()
        try:
            self._reserved, port = reserve_port(self.config.host, self.config.port)
            await _check_valkey(self.storage)  # one clear refusal, not one per worker
            self.worker_config = dataclasses.replace(self.config, port=port, metrics_port=None)
            if self.config.metrics_port is not None:
                self._metrics_dir = metrics.metrics_directory()
            self._stats = metrics.SupervisorMetrics(
                metrics.multiprocess_registry(self._metrics_dir) if self._metrics_dir else None
            )
            if self.config.metrics_port is not None:
                # Before the fork: a metrics port in use stops us before any worker runs.
                await self._start_exporter(self.config.metrics_port)
            loop.add_signal_handler(signal.SIGCHLD, self._reap)
            for sig in FORWARDED:
                loop.add_signal_handler(sig, self._signal, sig)
            starting = [self._spawn(slot) for slot in range(self.config.workers)]
            started = await asyncio.gather(*starting)
            if self.stopping:
                return await self._wait_workers()
            if not all(started):
                log.error("a worker could not start; stopping the others")
                self._signal(signal.SIGTERM)
                await self._wait_workers()
                return 2
            self._serving = True
            host = self._reserved[0].getsockname()[0]
            self.announce(host, port, self.config.workers)
            await self._stopped.wait()
            return await self._wait_workers()
        finally:
            await self._cleanup(loop)

    async def _cleanup(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.workers:  # an error on the way: leave no worker behind
            self._signal(signal.SIGTERM)
            await self._wait_workers()
        if self._exporter is not None:
            await self._exporter.close()
        if self._store is not None:
            await self._store.close()
        for sig in (*FORWARDED, signal.SIGCHLD):
            loop.remove_signal_handler(sig)
        for sock in self._reserved:
            sock.close()
        if self._metrics_dir is not None:
            metrics.remove_directory(self._metrics_dir)

    async def _start_exporter(self, port: int) -> None:
        assert self._stats is not None
        self._store = Store(
            dataclasses.replace(self.storage, max_connections=PARENT_VALKEY_CONNECTIONS)
        )
        self._exporter = exporter.Exporter(
            self._stats.registry,
            self._store,
            sample_every=self.config.metrics_sample,
            unhealthy=self._unhealthy,
        )
        await self._exporter.start(self.config.metrics_host, port)

    def _unhealthy(self) -> str | None:
        if self.stopping:
            return "shutting down"
        if not self.workers:
            return "no worker is running"
        return None

    # -- signals and exits ----------------------------------------------------

    def _signal(self, sig: int) -> None:
        """Forward SIGHUP, and the first SIGTERM/SIGINT; a worker needs one stop signal."""
        if self.stopping:
            return  # a second Ctrl-C changes nothing: the workers are finishing already
        if sig != signal.SIGHUP:
            log.info("shutting down %d workers", len(self.workers))
            self.stopping = True
            for handle in self._restarts.values():
                handle.cancel()
            self._restarts.clear()
            self._stopped.set()
            if not self.workers:
                self._gone.set()
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, sig)

    async def _wait_workers(self) -> int:
        """Wait for every worker to exit; SIGKILL those still there well after their grace."""
        limit = self.config.shutdown_grace + LINGER_TOTAL + 5
        try:
            await asyncio.wait_for(self._gone.wait(), limit)
        except TimeoutError:
            log.error("workers still running %.0f s after the signal; killing them", limit)
            self._clean = False
            for worker in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
            await self._gone.wait()
        return 0 if self._clean else 1

    def _reap(self) -> None:
        """SIGCHLD: collect exited workers (only ours: the private Valkey has its Popen)."""
        for worker in list(self.workers.values()):
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 255 << 8
            if pid:
                self._exited(worker, os.waitstatus_to_exitcode(status))

    def _exited(self, worker: Worker, code: int) -> None:
        del self.workers[worker.slot]
        if self._metrics_dir is not None:
            metrics.worker_exited(self._metrics_dir, worker.pid)
        if self._stats is not None:
            self._stats.workers.set(len(self.workers))
        listened = worker.ready.done() and worker.ready.result()
        if not worker.ready.done():
            worker.ready.set_result(False)
        if self.stopping or not (self._serving or listened):
            # A start failure (run() stops the rest), or an exit after our signal:
            # SIGTERM/SIGINT itself may end a worker that had no handler yet.
            if code != 0 and -code not in FORWARDED:
                self._clean = False
                log.error("worker %d (pid %d) %s", worker.slot, worker.pid, _describe(code))
            if not self.workers:
                self._gone.set()
            return
        lived = time.monotonic() - worker.started
        if lived >= STABLE_AFTER:
            self._failures[worker.slot] = 0
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self._failures[worker.slot], 10))
        self._failures[worker.slot] += 1
        log.error(
            "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
            worker.slot,
            worker.pid,
            _describe(code),
            lived,
            delay,
        )
        loop = asyncio.get_running_loop()
        self._restarts[worker.slot] = loop.call_later(delay, self._restart, worker.slot)

    def _restart(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if self.stopping:
            return
        if self._stats is not None:
            self._stats.restarts.inc()
        try:
            self._spawn(slot)
        except OSError as exc:  # fork failed (EAGAIN, ENOMEM): try again later
            log.error("cannot fork worker %d: %s; retrying in %.0f s", slot, exc, BACKOFF_MAX)
            loop = asyncio.get_running_loop()
            self._restarts[slot] = loop.call_later(BACKOFF_MAX, self._restart, slot)

    # -- fork -----------------------------------------------------------------

    def _spawn(self, slot: int) -> asyncio.Future[bool]:
        """Fork worker ``slot``; its future says whether it came to listen."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # No signal may run the parent's handlers in the child before it resets them.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, signal.SIGCHLD))
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:
            os.close(read_fd)
            self._child(write_fd, mask)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        worker = Worker(slot, pid, time.monotonic(), loop.create_future())
        self.workers[slot] = worker
        self._gone.clear()
        if self._stats is not None:
            self._stats.workers.set(len(self.workers))
        loop.add_reader(read_fd, self._on_ready, worker, read_fd)
        log.debug("worker %d started (pid %d)", slot, pid)
        return worker.ready

    def _on_ready(self, worker: Worker, fd: int) -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)
        if not worker.ready.done():
            worker.ready.set_result(bool(data))

    def _child(self, ready_fd: int, mask: Iterable[int]) -> NoReturn:
        """The forked worker: never returns into the parent's code."""
        code = 1
        try:
            _forget_parent_loop(mask)
            # Its own session, like the private Valkey: a Ctrl-C to the terminal's
            # process group reaches the parent only, which forwards it once.
            os.setsid()
            _die_with(self._parent)
            for sock in self._reserved:
                sock.close()
            for fd in self._exporter.sockets if self._exporter else []:
                os.close(fd)
            _quiet_stdout()  # one "listening" line, from the parent
            if self._metrics_dir is not None:
                metrics.use_multiprocess(self._metrics_dir)
            code = self.work(self.worker_config, functools.partial(_ready, ready_fd))
        except BaseException:
            with contextlib.suppress(BaseException):
                log.exception("worker failed")
        finally:
            with contextlib.suppress(BaseException):
                sys.stderr.flush()
            os._exit(code)


def _forget_parent_loop(mask: Iterable[int]) -> None:
    """Drop the parent's running loop, signal handlers and wakeup fd (inherited by fork)."""
    for sig in (*FORWARDED, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(None)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _die_with(parent: int) -> None:
    """SIGTERM from the kernel when the parent dies, even by SIGKILL (as the private Valkey)."""
    die_with_parent()
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def _ready(fd: int, host: str, port: int) -> None:
    os.write(fd, b"ready\n")
    os.close(fd)


async def _check_valkey(storage: StorageConfig) -> None:
    store = Store(dataclasses.replace(storage, max_connections=1))
    try:
        await store.check_server()
    finally:
        await store.close()
