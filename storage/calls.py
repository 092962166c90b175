"""One Valkey call: retried only when safe, and its failure as one of our errors.

valkey-py's own retries are off (``Retry(NoBackoff(), 0)``): a retry must
know whether the command is idempotent, which only the caller does. Every
valkey-py exception becomes a :class:`~storage.errors.StorageError` carrying
its wire code, ``from`` the original; nothing of a payload is ever echoed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import valkey.exceptions as valkey_exc

from storage import observe
from storage.errors import (
    FileExists,
    PasswordRefused,
    StorageError,
    StorageFull,
    StorageUnavailable,
)

T = TypeVar("T")

#: Attempts for an idempotent command (a chunk SET, a read, the commit).
ATTEMPTS = 3


def translate(exc: Exception) -> StorageError:
    """A valkey-py exception as one of ours (PHI: no payload is ever echoed)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, valkey_exc.ResponseError) and str(exc).startswith("VALISE_EXISTS"):
        return FileExists("the key already has a file")
    if _refused(exc):
        return PasswordRefused("Valkey refused the password (WRONGPASS or NOAUTH)")
    # valkey-py turns an "OOM ..." reply into OutOfMemoryError; inside a script
    # the prefix may survive in the message instead.
    if isinstance(exc, valkey_exc.OutOfMemoryError) or "OOM" in str(exc)[:40]:
        return StorageFull("Valkey is out of memory")
    if isinstance(exc, CLUSTER_TRANSIENT):
        return StorageUnavailable("the Valkey cluster is failing over or resharding")
    if isinstance(exc, valkey_exc.ConnectionError | valkey_exc.TimeoutError | OSError):
        return StorageUnavailable("Valkey is unreachable or too slow")
    if isinstance(exc, asyncio.TimeoutError):
        return StorageUnavailable("Valkey did not answer in time")
    return StorageError(f"Valkey error: {type(exc).__name__}")


# A dropped connection is worth another try; a timeout is not: Valkey is slow,
# and a retry would multiply the wait past --storage-timeout.
# In a cluster, CLUSTERDOWN (a failover in progress), TRYAGAIN (a slot being
# migrated) and a redirect loop are passing states, worth another try too.
CLUSTER_TRANSIENT = (
    valkey_exc.ClusterDownError,
    valkey_exc.TryAgainError,
    valkey_exc.MasterDownError,
    valkey_exc.ClusterError,
    # Not a ValkeyError: no reachable node, or a slot without a primary yet.
    valkey_exc.ValkeyClusterException,
    # A write reached a primary just demoted to replica.
    valkey_exc.ReadOnlyError,
)
#: Everything valkey-py raises.
VALKEY_ERRORS = (valkey_exc.ValkeyError, valkey_exc.ValkeyClusterException, OSError)
#: A wrong password is a ConnectionError to valkey-py; another try changes nothing.
_REFUSED = (valkey_exc.AuthenticationError, valkey_exc.AuthenticationWrongNumberOfArgsError)
_TRANSIENT = (valkey_exc.ConnectionError, ConnectionError, *CLUSTER_TRANSIENT)


async def call(
    op: Callable[[], Awaitable[T]],
    *,
    idempotent: bool,
    kind: str = "meta",
    window: float = 0.0,
) -> T:
    """Run one Valkey operation, retrying it only when it is safe to run twice.

    A transient failure is retried ATTEMPTS times, and beyond that for up to
    ``window`` seconds (a cluster failover), with backoff. ``kind`` names the
    operation for :mod:`storage.observe` (metrics).
    """
    attempts = ATTEMPTS if idempotent else 1
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await op()
        except VALKEY_ERRORS as exc:
            elapsed = time.monotonic() - started
            again = attempt < attempts or (idempotent and elapsed < window)
            transient = isinstance(exc, _TRANSIENT) and not _refused(exc)
            if transient and again:
                await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                continue
            error = translate(exc)
            observe.report(kind, elapsed, error.code.value)
            raise error from exc
        observe.report(kind, time.monotonic() - started, "ok")
        # valkey-py (asyncio.timeout(0) in can_read_destructive) can swallow a
        # cancel that lands at the wrong moment on 3.11; honour it here.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return result


def _refused(exc: BaseException) -> bool:
    """Valkey refused our credentials (over a unix socket valkey-py wraps the refusal)."""
    inner = exc.args[0] if exc.args else None
    return any(isinstance(e, _REFUSED) for e in (exc, exc.__cause__, inner))
