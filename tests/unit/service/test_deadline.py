"""service/deadline.py's Watchdog: one timer per connection keeps every read's deadline."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import uvloop

from service.deadline import Watchdog


def later(value: bytes, seconds: float) -> asyncio.Future[bytes]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()
    loop.call_later(seconds, future.set_result, value)
    return future


@pytest.mark.asyncio
async def test_a_read_past_its_deadline_raises_timeout_and_leaves_no_cancel() -> None:
    watchdog = Watchdog()
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await watchdog.within(never, 0.01)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert await watchdog.within(later(b"next", 0), 5) == b"next"  # the watchdog goes on


@pytest.mark.asyncio
async def test_an_earlier_deadline_than_the_armed_one_still_holds() -> None:
    watchdog = Watchdog()
    assert await watchdog.within(later(b"a", 0), 3600) == b"a"  # arms a timer an hour out
    never = asyncio.get_running_loop().create_future()
    reading = asyncio.ensure_future(watchdog.within(never, 0.01))
    done, _ = await asyncio.wait({reading}, timeout=30)  # not an hour
    assert reading in done
    with pytest.raises(TimeoutError):
        reading.result()


@pytest.mark.asyncio
async def test_a_later_deadline_than_the_armed_one_lets_the_read_finish() -> None:
    watchdog = Watchdog()
    assert await watchdog.within(later(b"a", 0), 0.01) == b"a"  # arms a timer 10 ms out
    # That timer goes off during this read, whose own deadline is far away.
    assert await watchdog.within(later(b"b", 0.1), 30) == b"b"


@pytest.mark.asyncio
async def test_a_cancel_from_elsewhere_stays_a_cancel() -> None:
    watchdog = Watchdog()
    reading = asyncio.ensure_future(watchdog.within(asyncio.get_running_loop().create_future(), 30))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


@pytest.mark.asyncio
async def test_close_lets_the_connection_go_at_once() -> None:
    kept = Watchdog()
    closed = Watchdog()
    for watchdog in (kept, closed):
        assert await watchdog.within(later(b"x", 0), 300) == b"x"
    closed.close()
    refs = weakref.ref(kept), weakref.ref(closed)
    del kept, closed, watchdog
    gc.collect()
    # The armed timer holds a connection's watchdog for the idle timeout, unless closed.
    assert [ref() is None for ref in refs] == [False, True]


async def _deadlines_at_and_near_now() -> list[bytes]:
    watchdog = Watchdog()
    got = []
    for seconds in (0, 0, 0.0001, 5):  # uvloop rounds delays to whole milliseconds
        ready = asyncio.get_running_loop().create_future()
        ready.set_result(b"x")
        got.append(await watchdog.within(ready, seconds))
    never = asyncio.get_running_loop().create_future()
    try:
        await watchdog.within(never, 0.0005)
    except TimeoutError:
        got.append(b"timeout")
    return got


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_deadlines_of_zero_and_under_a_millisecond_on_either_loop(loop: str) -> None:
    # uvloop turns a timer due within the millisecond into a plain Handle (no when()).
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(_deadlines_at_and_near_now()) == [b"x"] * 4 + [b"timeout"]
