"""How long to wait before the next attempt: exponential backoff with full jitter.

Attempt ``n`` (1 for the first retry) waits a uniformly random time between
0 and ``min(cap, base * 2 ** (n - 1))``. The random spread matters more than
the mean: when a server restarts, every scanner console that lost its link
comes back at once, and full jitter spreads them over the whole window
instead of in waves ("Exponential Backoff And Jitter", AWS Architecture
Blog, 2015). The ceiling (``--retry-max-wait``) keeps a long outage from
turning into hour-long sleeps.
"""

from __future__ import annotations

import random
from typing import Callable

__all__ = ["ceiling", "full_jitter", "schedule"]


def ceiling(attempt: int, base: float, cap: float) -> float:
    """The longest wait before retry ``attempt`` (1-based): ``min(cap, base * 2**(attempt-1))``."""
    if attempt < 1 or base <= 0 or cap <= 0:
        return 0.0
    # 2 ** 1100 overflows a float: past the cap the exponent no longer matters.
    exponent = min(attempt - 1, 1023)
    return min(cap, base * 2.0**exponent)


def full_jitter(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """A wait drawn uniformly from ``[0, ceiling(attempt, base, cap))``."""
    return ceiling(attempt, base, cap) * rand()


def schedule(retries: int, base: float, cap: float) -> list[float]:
    """The ceilings of ``retries`` retries: the worst case a caller may wait, in order."""
    return [ceiling(n, base, cap) for n in range(1, retries + 1)]
