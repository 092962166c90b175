"""Batches of Valkey commands in one round trip, on one node or a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any

#: Keys per PEXPIRE/UNLINK batch.
BATCH = 512
#: Commands of one batch in flight at once on a cluster.
BATCH_CONCURRENCY = 8


async def run_batch(client: Any, cluster: bool, queue: Callable[[Any], None]) -> Sequence[Any]:
    """The commands ``queue`` adds to a pipeline-like object, in one round trip.

    One node: a non-transactional pipeline. A cluster: the commands run
    concurrently one by one, so each follows its own MOVED/ASK redirect
    (valkey-py's cluster pipeline fails on a redirect during resharding).
    Raises the first error, like ``pipeline.execute()``.
    """
    if not cluster:
        async with client.pipeline(transaction=False) as pipe:
            queue(pipe)
            results: Sequence[Any] = await pipe.execute()
            return results
    recorder = _Recorder()
    queue(recorder)
    # A few at a time: each command in flight holds a connection of its node.
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async with gate:
            return await getattr(client, name)(*args, **kwargs)

    replies = await asyncio.gather(
        *(one(*command) for command in recorder.calls), return_exceptions=True
    )
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


class _Recorder:
    """Stands in for a pipeline: records ``pipe.command(*args, **kwargs)`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))

        return record


def batches(names: Iterable[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    for name in names:
        batch.append(name)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
