"""Many files over a few connections: ``put -r`` and ``get -r`` of a whole study.

A study is hundreds of small DICOM slices; one connection per command costs
a connect, HELLO and process start per file. A :class:`Batch` runs
``parallel`` workers, each with its own :class:`~client.aio.AsyncClient`
(one connection, its own retries), taking the next file from a shared list
until none is left. A file that fails is recorded and the others go on;
errors that say every later file would fail too (no access, cannot connect,
a missing server feature) stop the batch, and the files not tried are
reported as such. Progress is one callback over the bytes of the whole batch.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .aio import AsyncClient
from .errors import (
    BadVersion,
    ConnectionFailed,
    Forbidden,
    Unauthorized,
    Unsupported,
    ValiseError,
)
from .localpaths import Planned, UnsafeKey
from .transfer import Progress

__all__ = ["STOPS_BATCH", "Batch", "Outcome", "Summary"]

#: Failures that every later file would meet as well: the batch stops there.
STOPS_BATCH: tuple[type[ValiseError], ...] = (
    Unauthorized,
    Forbidden,
    BadVersion,
    ConnectionFailed,
    Unsupported,
)


@dataclass
class Outcome:
    """One file of a batch: the server's info, or why it failed (or was not tried)."""

    item: Planned
    info: dict[str, Any] | None = None
    error: BaseException | None = None
    tried: bool = True

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Summary:
    """What a batch did, for the last line (and the last JSON object) of the command."""

    files: int = 0
    done: int = 0
    failed: int = 0
    not_tried: int = 0
    bytes: int = 0
    seconds: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "done": self.done,
            "failed": self.failed,
            "not_tried": self.not_tried,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


Client = Callable[[], AsyncClient]
#: One transfer: (client, item, per-file progress) -> the server's info.
Transfer = Callable[[AsyncClient, Planned, Progress], Any]


class Batch:
    """Runs one transfer per item on ``parallel`` connections; see the module docstring.

    ``on_outcome`` is called as each file finishes (for per-file output);
    ``progress(done_bytes, total_bytes)`` covers the whole batch.
    """

    def __init__(
        self,
        make_client: Client,
        *,
        parallel: int = 4,
        progress: Progress | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.make_client = make_client
        self.parallel = max(1, parallel)
        self.progress = progress
        self.on_outcome = on_outcome
        self._done_bytes: dict[int, int] = {}
        self._total: int | None = None
        self._stop: BaseException | None = None

    async def put(self, items: Sequence[Planned], **options: Any) -> Summary:
        """Upload each ``item.path`` to ``item.key`` (``options`` go to ``put``)."""

        async def one(client: AsyncClient, item: Planned, progress: Progress) -> Any:
            return await client.put(item.key, item.path, progress=progress, **options)

        return await self.run(items, one)

    async def get(self, items: Sequence[Planned]) -> Summary:
        """Download each ``item.key`` to ``item.path``, creating folders as needed."""

        async def one(client: AsyncClient, item: Planned, progress: Progress) -> Any:
            parent = os.path.dirname(item.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            return await client.get(item.key, item.path, progress=progress)

        return await self.run(items, one)

    async def run(self, items: Sequence[Planned], transfer: Transfer) -> Summary:
        started = time.monotonic()
        sizes = [item.size for item in items]
        self._total = None if None in sizes else sum(s or 0 for s in sizes)
        summary = Summary(files=len(items))
        queue = iter(enumerate(items))
        workers = [
            asyncio.ensure_future(self._worker(queue, transfer, summary))
            for _ in range(min(self.parallel, len(items)))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        for _, item in queue:  # left when the batch stopped
            self._record(summary, Outcome(item, error=self._stop, tried=False))
        summary.outcomes.sort(key=lambda o: o.item.key)
        summary.seconds = time.monotonic() - started
        return summary

    async def _worker(
        self, queue: Iterator[tuple[int, Planned]], transfer: Transfer, summary: Summary
    ) -> None:
        client = self.make_client()
        try:
            for index, item in queue:
                if self._stop is not None:
                    self._record(summary, Outcome(item, error=self._stop, tried=False))
                    continue
                outcome = await self._one(client, index, item, transfer)
                if isinstance(outcome.error, STOPS_BATCH) and self._stop is None:
                    self._stop = outcome.error
                self._record(summary, outcome)
        finally:
            await client.close()

    async def _one(
        self, client: AsyncClient, index: int, item: Planned, transfer: Transfer
    ) -> Outcome:
        def progress(done: int, total: int | None) -> None:
            self._done_bytes[index] = done
            if self.progress is not None:
                self.progress(sum(self._done_bytes.values()), self._total)

        try:
            info = await transfer(client, item, progress)
        except (ValiseError, OSError, UnsafeKey) as exc:
            self._done_bytes.pop(index, None)
            return Outcome(item, error=exc)
        return Outcome(item, info=info)

    def _record(self, summary: Summary, outcome: Outcome) -> None:
        summary.outcomes.append(outcome)
        if outcome.ok:
            summary.done += 1
            size = (outcome.info or {}).get("size")
            summary.bytes += size if isinstance(size, int) else 0
        elif outcome.tried:
            summary.failed += 1
        else:
            summary.not_tried += 1
        if self.on_outcome is not None:
            self.on_outcome(outcome)
