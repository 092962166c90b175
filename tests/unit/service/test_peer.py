"""service/peer.py: the rate floor both doors hold an upload to."""

from __future__ import annotations

from service.peer import RateFloor


def test_a_full_window_under_the_floor_fails() -> None:
    floor = RateFloor(min_rate=1000, window=10.0)
    assert floor.add(500, 5.0)  # half a window: not judged yet
    assert not floor.add(500, 5.0)  # 1000 bytes in 10 s: 100 B/s


def test_a_window_at_the_floor_passes_and_starts_over() -> None:
    floor = RateFloor(min_rate=1000, window=10.0)
    assert floor.add(10_000, 10.0)
    # The next window is judged on its own bytes, not on the last one's.
    assert floor.add(0, 9.0)
    assert not floor.add(0, 1.0)


def test_time_not_spent_waiting_on_the_client_does_not_count() -> None:
    floor = RateFloor(min_rate=1000, window=10.0)
    for _ in range(100):  # fast reads, however long the writes between them took
        assert floor.add(1000, 0.01)
