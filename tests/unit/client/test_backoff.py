"""Unit tests for client/backoff.py: the ceilings double up to the cap, the wait is full jitter."""

from __future__ import annotations

import pytest

from client.backoff import ceiling, full_jitter, schedule


def test_ceilings_double_from_base_until_the_cap() -> None:
    assert schedule(8, 0.5, 60.0) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]


def test_no_retry_or_no_base_waits_nothing() -> None:
    assert schedule(0, 0.5, 60.0) == []
    assert ceiling(0, 0.5, 60.0) == 0.0
    assert ceiling(3, 0.0, 60.0) == 0.0
    assert ceiling(3, 0.5, 0.0) == 0.0


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert ceiling(5000, 0.2, 60.0) == 60.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_full_jitter_spans_zero_to_the_ceiling(draw: float) -> None:
    assert full_jitter(4, 0.5, 60.0, lambda: draw) == pytest.approx(4.0 * draw)


def test_full_jitter_never_exceeds_the_ceiling() -> None:
    waits = [full_jitter(n, 0.2, 3.0) for n in range(1, 12) for _ in range(50)]
    assert all(0.0 <= w <= 3.0 for w in waits)
    assert min(waits) < 0.1  # full jitter reaches down to zero, not half the ceiling
