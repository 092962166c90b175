"""service/subscription.py without sockets: what a subscriber is offered, and its bounds."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import ErrorCode, ProtocolError
from service.metrics import Metrics
from service.subscription import MAX_PENDING_BYTES, MAX_PENDING_EVENTS, Subscription

pytestmark = pytest.mark.asyncio


def pending(subscription: Subscription) -> int:
    return len(subscription._queue)


async def test_only_events_under_the_prefix_and_after_the_floor_are_queued() -> None:
    subscription = Subscription("", "scans/*?", Metrics())
    subscription.floor = (10, 0)
    subscription.offer((9, 5), b"scans/*?/a", b"old")
    subscription.offer((10, 0), b"scans/*?/b", b"at the floor")
    subscription.offer((10, 1), b"scans/x", b"other prefix")
    subscription.offer((10, 2), b"scans/*?", b"the prefix itself")
    subscription.offer((11, 0), b"scans/*?/c", b"new")
    assert list(subscription._queue) == [b"the prefix itself", b"new"]
    assert not subscription.failure.done()


@pytest.mark.parametrize(
    ("count", "size"),
    [(MAX_PENDING_EVENTS + 1, 10), (MAX_PENDING_BYTES // 65536 + 1, 65536)],
)
async def test_too_much_waiting_cuts_the_subscriber_off(count: int, size: int) -> None:
    metrics = Metrics()
    subscription = Subscription("", "", metrics)
    for i in range(count):
        subscription.offer((1, i), b"k", b"x" * size)
    assert subscription.failure.done()
    error = subscription.failure.result()
    assert error is not None
    assert (error.code, error.fatal) == (ErrorCode.TIMEOUT, True)
    assert pending(subscription) == 0  # its events are dropped at once
    subscription.offer((2, 0), b"k", b"later")
    assert pending(subscription) == 0
    assert metrics.registry.get_sample_value("valise_subscribers_cut_off_total") == 1


async def test_a_full_but_bounded_queue_is_kept() -> None:
    subscription = Subscription("", "", Metrics())
    for i in range(MAX_PENDING_EVENTS):
        subscription.offer((1, i), b"k", b"x")
    assert not subscription.failure.done()
    assert pending(subscription) == MAX_PENDING_EVENTS


async def test_closing_leaves_the_feed_once() -> None:
    left: list[Subscription] = []
    subscription = Subscription("", "", Metrics())
    subscription.on_close = left.append
    await subscription.close()
    await subscription.close()
    assert left == [subscription]
    assert subscription.failure.result() is None  # a quiet end, no ERROR


async def test_guard_gives_the_read_or_the_failure() -> None:
    reader = asyncio.StreamReader()
    subscription = Subscription("", "", Metrics())
    reader.feed_data(b"ping")
    assert await subscription.guard(reader, 100, None) == b"ping"
    with pytest.raises(TimeoutError):
        await subscription.guard(reader, 100, 0.01)
    subscription.cut_off("slow")
    with pytest.raises(ProtocolError) as caught:
        await subscription.guard(reader, 100, None)
    assert caught.value.code == ErrorCode.TIMEOUT
