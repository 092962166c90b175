"""The metrics endpoint: ``/metrics`` and ``/healthz`` over HTTP, and the usage gauges.

The endpoint is a tiny HTTP/1.1 handler on the server's own event loop, not
prometheus_client's threaded server: ``/healthz`` awaits the Store on this
loop, the usage gauges are replaced between two awaits (a scrape never sees
them half-updated), and the reads are bounded in size and time like every
other socket we serve. What is counted lives in service/metrics.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from storage import StorageError, Store

log = logging.getLogger("valise.metrics")

#: /healthz answers within this many seconds even when Valkey hangs.
HEALTH_TIMEOUT = 2.0
#: Bounds on one HTTP request to the endpoint: head size, seconds in all.
HTTP_LIMIT = 8192
HTTP_TIMEOUT = 10.0


class Usage:
    """Files and bytes per namespace, sampled in the background (a walk of every index)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.files = Gauge(
            "valise_stored_files",
            "Live files per namespace (sampled).",
            ["namespace"],
            registry=registry,
        )
        self.bytes = Gauge(
            "valise_stored_bytes",
            "Bytes of live files per namespace (sampled).",
            ["namespace"],
            registry=registry,
        )
        self.sampled = Gauge(
            "valise_usage_sampled_timestamp_seconds",
            "Unix time of the last successful usage sample (0: none yet).",
            registry=registry,
        )

    async def sample(self, store: Store) -> bool:
        """Replace the gauges with a fresh walk; keep the old ones if Valkey fails."""
        try:
            found = await store.usage()
        except StorageError as exc:
            log.warning("usage not sampled: %s", exc.message)
            return False
        # No await from here on: a scrape sees the old figures or the new ones.
        self.files.clear()
        self.bytes.clear()
        for namespace, (files, size) in found.items():
            self.files.labels(namespace).set(files)
            self.bytes.labels(namespace).set(size)
        self.sampled.set_to_current_time()
        return True


async def check_store(store: Store) -> str | None:
    """None when Valkey answers PING within HEALTH_TIMEOUT; else why not, for the 503.

    Not ``asyncio.wait_for``: it waits for the cancelled PING to end, and
    valkey-py can swallow a cancel (see :func:`_stop_if_cancelled`), which
    would hold /healthz for the whole storage timeout. A late probe is
    cancelled and left to end on its own.
    """
    probe = asyncio.ensure_future(store.health())
    done, _ = await asyncio.wait({probe}, timeout=HEALTH_TIMEOUT)
    if not done:
        probe.cancel()
        _late_probes.add(probe)
        probe.add_done_callback(_forget_probe)
        return f"Valkey did not answer within {HEALTH_TIMEOUT:g} s"
    error = probe.exception()
    if isinstance(error, StorageError):
        return error.message
    if error is not None:
        raise error
    return None


_late_probes: set[asyncio.Future[None]] = set()


def _forget_probe(probe: asyncio.Future[None]) -> None:
    _late_probes.discard(probe)
    if not probe.cancelled():
        probe.exception()  # retrieved: no "exception was never retrieved" at exit


def _stop_if_cancelled() -> None:
    """Deliver a cancel that a Valkey call swallowed.

    valkey-py checks a pooled connection under ``asyncio.timeout(0)``; on
    Python 3.11 a cancel landing in that window is taken for the timeout and
    lost, and the call completes. The task still counts the cancel request.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Exporter:
    """``/metrics`` and ``/healthz`` over HTTP, and the usage sampler behind them.

    ``unhealthy`` names a reason to answer 503 before Valkey is asked (the
    server is shutting down, no worker is alive).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        store: Store,
        *,
        sample_every: float,
        unhealthy: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.usage = Usage(registry)
        self.sample_every = sample_every
        self.unhealthy = unhealthy
        #: Where it listens, once started (``--metrics-port 0`` picks a port).
        self.address: tuple[str, int] | None = None
        self._listener: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._listener = await asyncio.start_server(self._serve, host, port, limit=HTTP_LIMIT)
        self._sampler = asyncio.create_task(self._sample_forever())
        self.address = self._listener.sockets[0].getsockname()[:2]
        log.info("metrics on http://%s:%d/metrics and /healthz", *self.address)
        return self.address

    @property
    def sockets(self) -> list[int]:
        """The listening descriptors (a forked worker closes its copies)."""
        return [s.fileno() for s in self._listener.sockets] if self._listener else []

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()

    async def _sample_forever(self) -> None:
        while True:
            await self.usage.sample(self.store)
            _stop_if_cancelled()
            await asyncio.sleep(self.sample_every)

    async def health(self) -> str | None:
        return self.unhealthy() or await check_store(self.store)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HTTP_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                method, status, ctype, body = await self._respond(head)
                writer.write(_response(status, ctype, body, head_only=method == b"HEAD"))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that never finishes its request gets nothing
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[bytes, str, str, bytes]:
        """(method, status, content type, body) for one request head."""
        text = "text/plain; charset=utf-8"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return b"", "400 Bad Request", text, b"bad request\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return method, "405 Method Not Allowed", text, b"GET or HEAD\n"
        if target == b"/metrics":
            return method, "200 OK", CONTENT_TYPE_PLAIN_0_0_4, generate_latest(self.registry)
        if target == b"/healthz":
            reason = await self.health()
            if reason is None:
                return method, "200 OK", text, b"ok\n"
            return method, "503 Service Unavailable", text, f"unavailable: {reason}\n".encode()
        return method, "404 Not Found", text, b"try /metrics or /healthz\n"


def _response(status: str, ctype: str, body: bytes, *, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + (b"" if head_only else body)
