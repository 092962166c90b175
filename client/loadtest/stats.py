"""Counters and latencies of a run, updated by the workers, read by the report."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class LiveBytes:
    """A transfer's ``progress`` callback: adds new bytes to a shared counter."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._last = 0

    def __call__(self, done: int, total: int | None) -> None:
        if done > self._last:
            self._stats.live_bytes += done - self._last
        self._last = done


@dataclass
class OpStats:
    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    not_found: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Stats:
    def __init__(self, ops: Sequence[str]) -> None:
        self.ops = {op: OpStats() for op in ops}
        self.cleanup_errors: Counter[str] = Counter()
        self.corruptions: list[dict[str, Any]] = []
        self.anomalies: list[dict[str, Any]] = []
        self.error_samples: list[dict[str, Any]] = []
        self.live_bytes = 0
        self.done = 0

    @property
    def error_count(self) -> int:
        per_op = sum(sum(s.errors.values()) for s in self.ops.values())
        return per_op + sum(self.cleanup_errors.values())

    def errors_by_code(self) -> Counter[str]:
        total: Counter[str] = Counter(self.cleanup_errors)
        for s in self.ops.values():
            total.update(s.errors)
        return total
