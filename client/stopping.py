"""Stop signals for the long-running commands, the same on Linux, macOS and Windows.

``loop.add_signal_handler`` exists only on asyncio's Unix loops: Windows'
loops raise ``NotImplementedError``, which crashed the agent at start there.
``signal.signal`` works on every platform (from the main thread): its handler
runs in the main thread between two bytecodes and hands the stop over to the
event loop with ``call_soon_threadsafe``, which also wakes a loop that is
waiting in ``select``. The signals: SIGINT (Ctrl+C), SIGTERM (``kill``, a
service manager) and, on Windows, SIGBREAK (Ctrl+Break).

The previous handlers come back when the ``with`` block ends, so what asyncio
itself installed (``asyncio.run`` turns SIGINT into a cancellation on 3.11+)
works again afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from typing import Any, Awaitable, Callable, Iterator

__all__ = ["STOP_SIGNALS", "on_stop", "run_until_stopped"]

#: Names of the signals that stop a command, where the platform has them.
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")


@contextlib.contextmanager
def on_stop(callback: Callable[[str], None]) -> Iterator[list[str]]:
    """Call ``callback(signal_name)`` on the running loop for each stop signal.

    Yields the names of the signals actually handled (none outside the main
    thread, where Python allows no handlers: the caller's own thread or
    process management stops it there).
    """
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    handled: list[str] = []

    def handler(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, name)

    if threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                previous[sig] = signal.signal(sig, handler)
            except (OSError, ValueError, RuntimeError):
                continue
            handled.append(name)
    try:
        yield handled
    finally:
        for sig, old in previous.items():
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


async def run_until_stopped(work: Awaitable[Any]) -> None:
    """Run ``work`` until it ends or a stop signal cancels it (a clean stop)."""
    task = asyncio.ensure_future(work)

    def stop(_: str) -> None:
        task.cancel()

    with on_stop(stop), contextlib.suppress(asyncio.CancelledError):
        await task
