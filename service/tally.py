"""Metric updates on the request path kept as plain numbers until a collect.

prometheus_client takes a lock and checks the metric on every ``inc()`` and
``observe()``; a small PUT+GET pair makes a dozen of them, about 4 % of its
server CPU (issue 21). In a one-process server the figures are only ever read
through that process's registry, so they wait here as numbers and are folded
into the metrics by a collector registered ahead of them: a scrape, or a
``get_sample_value``, sees every update made before it. Counts are exact; a
histogram's sum adds the held observations together first, so it may differ
from adding them one at a time in the last bit of the float.

Under ``--workers`` a worker's figures live in shared files the parent reads
without asking the worker, so there every update goes through at once
(``behind=False``).

A histogram's pending observations are counted per bucket as
prometheus_client's ``observe`` counts them (the first bound not below the
value) and added to its ``_buckets`` and ``_sum``: private names of the
pinned version, which tests/unit/service/test_tally.py compares with
``observe`` itself.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry


class _Histogram:
    """Observations of one histogram child not yet handed over."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


class Tally:
    """Where the request path sends its counts (service/metrics.py ``Metrics``)."""

    def __init__(self, registry: CollectorRegistry, *, behind: bool) -> None:
        self.behind = behind
        self._counts: dict[Any, float] = {}  # Counter or Gauge child: amount pending
        self._histograms: dict[Any, _Histogram] = {}
        if behind:
            # Before the metrics register: the registry collects in that order.
            registry.register(_FlushFirst(self))

    def inc(self, child: Any, amount: float = 1) -> None:
        """``child.inc(amount)``; a Gauge's dec is a negative amount."""
        if not self.behind:
            child.inc(amount)
            return
        counts = self._counts
        counts[child] = counts.get(child, 0) + amount

    def observe(self, child: Any, value: float) -> None:
        """``child.observe(value)`` for a Histogram child."""
        if not self.behind:
            child.observe(value)
            return
        pending = self._histograms.get(child)
        if pending is None:
            pending = self._histograms[child] = _Histogram(child)
        if value == value:  # NaN goes in no bucket, as with observe()
            pending.counts[bisect_left(pending.bounds, value)] += 1
        pending.total += value

    def flush(self) -> None:
        """Hand every pending update to prometheus_client."""
        counts, self._counts = self._counts, {}
        for child, amount in counts.items():
            if amount:
                child.inc(amount)
        histograms, self._histograms = self._histograms, {}
        for child, pending in histograms.items():
            child._sum.inc(pending.total)
            for bucket, count in zip(child._buckets, pending.counts, strict=True):
                if count:
                    bucket.inc(count)


class _FlushFirst:
    """A collector of nothing that flushes the tally when the registry collects."""

    def __init__(self, tally: Tally) -> None:
        self._tally = tally

    def describe(self) -> list[Any]:
        return []  # no names of its own; without this, register() would collect

    def collect(self) -> list[Any]:
        self._tally.flush()
        return []
