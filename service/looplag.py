"""How late the event loop runs: ``valise_loop_lag_seconds``.

A timer asks to wake every ``INTERVAL`` seconds and records how much later
than asked it woke. A loop that one client keeps busy (or a slow Valkey
reply parsed on the loop) shows up here before it shows up as timeouts:
the same signal uvicorn and aiohttp users add by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry, Histogram

#: Seconds between two samples.
INTERVAL = 0.25
#: Seconds of lag; under 5 ms is a healthy loop.
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class LoopLag:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "valise_loop_lag_seconds",
            "How much later than asked the event loop woke a timer (sampled every 0.25 s).",
            buckets=BUCKETS,
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample(self) -> None:
        while True:
            asked = time.monotonic() + INTERVAL
            await asyncio.sleep(INTERVAL)
            self.histogram.observe(max(0.0, time.monotonic() - asked))
