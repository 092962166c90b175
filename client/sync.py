"""Blocking Valise client: :class:`~client.aio.AsyncClient` on a private event loop.

The loop runs in a daemon thread owned by the :class:`Client`, so the blocking
methods work from plain scripts, from threads, and even from code that is
itself inside a running event loop (where ``asyncio.run`` would refuse).
Callbacks (``progress``) and stream reads/writes happen on that thread while
the calling thread waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from .aio import DEFAULT_PORT, AsyncClient, Progress
from .files import GetDest, PutSource

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Blocking client; takes the same arguments as :class:`AsyncClient`."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="valise-client", daemon=True
        )
        self._thread.start()
        self._aio = AsyncClient(host, port, **kwargs)
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def server_info(self) -> dict[str, Any] | None:
        """The last HELLO reply."""
        return self._aio.server_info

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt while waiting: stop the work on the loop too.
            future.cancel()
            raise

    def close(self) -> None:
        """Close the connection and stop the private loop."""
        if self._closed:
            return
        try:
            self._run(self._aio.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def hello(self, client: str | None = None, token: str | None = None) -> dict[str, Any]:
        return self._run(self._aio.hello(client=client, token=token))

    def ping(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._run(self._aio.ping(payload))

    def stat(self, key: str) -> dict[str, Any]:
        return self._run(self._aio.stat(key))

    def delete(self, key: str) -> bool:
        return self._run(self._aio.delete(key))

    def put(
        self,
        key: str,
        source: PutSource,
        *,
        ttl: int | None = None,
        content_type: str | None = None,
        size: int | None = None,
        progress: Progress | None = None,
        if_absent: bool = False,
        resumable: bool | None = False,
    ) -> dict[str, Any]:
        return self._run(
            self._aio.put(
                key,
                source,
                ttl=ttl,
                content_type=content_type,
                size=size,
                progress=progress,
                if_absent=if_absent,
                resumable=resumable,
            )
        )

    def resume(
        self, upload_id: str, source: PutSource, *, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Finish a resumable upload from the server's offset (:meth:`AsyncClient.resume`)."""
        return self._run(self._aio.resume(upload_id, source, progress=progress))

    def get(
        self,
        key: str,
        dest: GetDest,
        *,
        offset: int | None = None,
        length: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        return self._run(self._aio.get(key, dest, offset=offset, length=length, progress=progress))

    def list(self, prefix: str = "", limit: int | None = None) -> Iterator[dict[str, Any]]:
        """File info of every key starting with ``prefix`` (all pages)."""
        pages = self._aio.list(prefix, limit)
        try:
            while True:
                try:
                    item = self._run(_anext(pages))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._closed:
                self._run(pages.aclose())


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()  # the builtin anext() needs Python 3.10
