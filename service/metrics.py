"""Prometheus metrics: what a server process counts (served by service/exporter.py).

Labels never name a file: they are an operation, an outcome (``ok`` or an
error code), a Valkey call kind, a transfer direction, a namespace (from the
tokens file). Key names can be PHI and never become a label or a log line.

With ``--workers N`` each worker counts into prometheus_client's multiprocess
files (:func:`use_multiprocess`) and the parent serves the sum
(:func:`multiprocess_registry`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.tally import Tally
from storage import observe

log = logging.getLogger("valise.metrics")

#: Seconds; a request is anything from a PING to a 64 GiB upload.
REQUEST_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Seconds; one Valkey call moves at most one chunk.
VALKEY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30)

_DIRECTION = {"put": "upload", "resume": "upload", "get": "download"}
#: What happens to resumable uploads (docs/protocol.md section 6.1).
RESUMABLE_EVENTS = ("started", "resumed", "completed", "refused", "expired")

# No *_created series: the multiprocess sums have none, so one process would
# expose them and several would not; the start time is no use to an alert.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    """The counters of one server process (one worker).

    Each instance has its own registry, so several servers in one process
    (the tests) never collide; in multiprocess mode the values live in the
    shared files whatever the registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # In-process values (not a worker's shared files): the request path's
        # updates wait as numbers until the registry collects (service/tally.py).
        self.tally = Tally(r, behind=values.ValueClass is values.MutexValue)
        self.requests = Counter(
            "valise_requests",
            "Requests by operation and outcome (ok, aborted, disconnected or the error code).",
            ["op", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "valise_request_seconds",
            "Request duration by operation; a PUT or GET lasts its whole transfer.",
            ["op"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.received = Counter(
            "valise_received_bytes", "File bytes received in uploads (DATA payload).", registry=r
        )
        self.sent = Counter(
            "valise_sent_bytes", "File bytes sent in downloads (DATA payload).", registry=r
        )
        # Per worker (a pid label under --workers): --max-connections is per worker.
        self.connections = Gauge(
            "valise_connections",
            "Open client connections (per worker process when there are several).",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.refused = Counter(
            "valise_connections_refused",
            "Connections refused at accept (busy: --max-connections; shutting_down).",
            ["code"],
            registry=r,
        )
        self.transfers = Gauge(
            "valise_transfers",
            "Uploads and downloads in progress.",
            ["direction"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.valkey_seconds = Histogram(
            "valise_valkey_call_seconds",
            "Valkey call duration (retries included) by kind and outcome.",
            ["kind", "outcome"],
            buckets=VALKEY_BUCKETS,
            registry=r,
        )
        self.valkey_errors = Counter(
            "valise_valkey_errors",
            "Failed Valkey calls by outcome (the error code the failure maps to).",
            ["outcome"],
            registry=r,
        )
        #: Label children by (metric, labels): see _child.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        #: The same for the two hottest callers: one lookup, not one per child.
        self._ended: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._calls: dict[tuple[str, str], Any] = {}
        self.resumable = Counter(
            "valise_resumable_uploads",
            "Resumable uploads by event: started (PUT), resumed (RESUME), completed "
            "(committed), refused (--max-resumable), expired (found past their deadline "
            "by a later resumable PUT in the namespace: a lower bound).",
            ["event"],
            registry=r,
        )
        self.resume_saved = Counter(
            "valise_resume_saved_bytes",
            "Bytes clients did not send again: the sum of the offsets RESUME answered.",
            registry=r,
        )
        for direction in _DIRECTION.values():
            self.transfers.labels(direction)  # present at 0 before the first transfer
        for event in RESUMABLE_EVENTS:
            self.resumable.labels(event)
        # Change events (docs/protocol.md section 6.3).
        self.subscribers = Gauge(
            "valise_subscribers",
            "Connections subscribed to change events.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.events_published = Counter(
            "valise_events_published",
            "Change events written by this process's commits and deletes, by event.",
            ["event"],
            registry=r,
        )
        self.events_delivered = Counter(
            "valise_events_delivered", "EVENT frames sent to subscribers.", registry=r
        )
        self.subscribers_cut_off = Counter(
            "valise_subscribers_cut_off",
            "Subscribers cut off because their events waited undelivered (or were lost).",
            registry=r,
        )

    def request_started(self, op: str) -> None:
        direction = _DIRECTION.get(op)
        if direction is not None:
            self.tally.inc(self._child(self.transfers, direction))

    def request_ended(self, op: str, outcome: str, seconds: float, nbytes: int) -> None:
        """Called where the access-log record is written, once per request."""
        cells = self._ended.get((op, outcome))
        if cells is None:
            cells = self._ended[(op, outcome)] = self._ended_cells(op, outcome)
        requests, duration, transfers, moved = cells
        tally = self.tally
        tally.inc(requests)
        tally.observe(duration, seconds)
        if transfers is not None:
            tally.inc(transfers, -1)
            tally.inc(moved, nbytes)

    def _ended_cells(self, op: str, outcome: str) -> tuple[Any, Any, Any, Any]:
        """request_ended()'s four children for ``op`` and ``outcome``, found once."""
        direction = _DIRECTION.get(op)
        return (
            self._child(self.requests, op, outcome),
            self._child(self.request_seconds, op),
            None if direction is None else self._child(self.transfers, direction),
            self.received if direction == "upload" else self.sent,
        )

    def resumable_event(self, event: str, count: int = 1) -> None:
        if count:
            self.resumable.labels(event).inc(count)

    def valkey_call(self, kind: str, seconds: float, outcome: str) -> None:
        """A :mod:`storage.observe` observer."""
        child = self._calls.get((kind, outcome))
        if child is None:
            child = self._calls[(kind, outcome)] = self._child(self.valkey_seconds, kind, outcome)
        self.tally.observe(child, seconds)
        if outcome != "ok":
            self._child(self.valkey_errors, outcome).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: labels() validates and locks
        on every call, a few microseconds of every small request."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def event_published(self, event: str) -> None:
        """A :mod:`storage.observe` event observer: one per stored file."""
        self.tally.inc(self._child(self.events_published, event))

    def observe_storage(self) -> None:
        observe.subscribe(self.valkey_call)
        observe.subscribe_events(self.event_published)

    def stop_observing(self) -> None:
        observe.unsubscribe(self.valkey_call)
        observe.unsubscribe_events(self.event_published)


# -- several worker processes ---------------------------------------------------


def metrics_directory() -> Path:
    """A private 0700 directory for the multiprocess files, in memory (/dev/shm).

    The files hold only counters and labels, no PHI, but nothing of ours goes
    to disk when memory will do; without /dev/shm, the temp dir (logged).
    """
    shm = Path("/dev/shm")
    prefix = f"valise-metrics-{os.getpid()}-"
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    path = Path(tempfile.mkdtemp(prefix=prefix))
    log.warning("no /dev/shm: worker metrics files go to %s", path)
    return path


def remove_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def use_multiprocess(directory: Path) -> None:
    """In a worker, before its first metric: count into files in ``directory``.

    prometheus_client picks its value class at import time from
    PROMETHEUS_MULTIPROC_DIR; the worker is forked after that import, so the
    class is set here (the library's documented escape hatch, see its
    ``values.MultiProcessValue``).
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """The parent's registry: the sum of every worker's files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


class SupervisorMetrics:
    """The parent's own figures under --workers, beside the workers' sums."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.workers = Gauge("valise_workers", "Worker processes running.", registry=self.registry)
        self.restarts = Counter(
            "valise_worker_restarts",
            "Workers started again after one died.",
            registry=self.registry,
        )


def worker_exited(directory: Path, pid: int) -> None:
    """Drop a dead worker's live gauges; its counters stay in the sums."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
