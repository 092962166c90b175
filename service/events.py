"""Change events, fanned out: one Valkey reader per namespace per process.

docs/protocol.md section 6.3; docs/decisions/0011-change-events.md. The
commit and delete scripts write each event into the namespace's stream
(storage/). Here a :class:`Feed` per namespace that has subscribers in this
process follows that stream (``XREAD BLOCK`` on a connection of its own) and
offers each event to its subscribers, which queue it without waiting
(:mod:`service.subscription`). A thousand subscribers of one namespace cost
one Valkey connection.

No gap, no duplicate: a subscriber joins its feed at the feed's position P
(the last event the feed has handed out), with no await between reading P
and joining, so the feed offers it exactly the events after P. The OK's
cursor is P. With ``since``, the events after ``since`` up to P are read
from the stream (the replay) and sent before the live ones, which wait in
the subscriber's queue meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from protocol.errors import ErrorCode
from service.metrics import Metrics
from service.subscription import Subscription, event_frame
from storage import StorageError
from storage.events import READ_COUNT, EventLog, Order, Record, parse_id

log = logging.getLogger("valise.events")

#: Seconds between attempts of a feed whose Valkey fails: from the first to the last.
RETRY_FIRST = 0.05
RETRY_LAST = 2.0
#: Shutdown: seconds between closes of the event reader while feeds still run.
CLOSE_AGAIN = 0.1


class Feed:
    """One namespace's stream, followed for the subscribers of this process."""

    def __init__(self, hub: EventHub, namespace: str) -> None:
        self.hub = hub
        self.namespace = namespace
        #: The last event handed out (None: the stream held none when the feed started).
        self.position: str | None = None
        self.order: Order = (0, 0)
        self.subscribers: set[Subscription] = set()
        #: Subscriptions waiting for ``ready``; the feed stays while there are any.
        self.joining = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run())
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A feed that died of a bug must not leave its subscribers waiting in silence."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("change events feed failed", exc_info=task.exception())
        self.hub.forget(self)
        for subscriber in tuple(self.subscribers):
            subscriber.cut_off("internal server error", ErrorCode.INTERNAL)

    def _moved(self, position: str | None) -> None:
        self.position = position
        order = parse_id(position) if position is not None else None
        self.order = order if order is not None else (0, 0)

    async def _run(self) -> None:
        try:
            self._moved(await self.hub.log.latest(self.namespace))
        except StorageError as exc:
            self.ready.set_exception(exc)
            self.hub.forget(self)
            return
        self.ready.set_result(None)
        delay = 0.0
        while True:
            try:
                if delay:
                    await self._check_continuity()
                records = await self.hub.log.follow(self.namespace, self.position or "0-0")
            except StorageError as exc:
                _honour_cancel()
                if not delay:
                    log.warning("change events paused: %s", exc.message)
                delay = min(max(delay * 2, RETRY_FIRST), RETRY_LAST)
                await asyncio.sleep(delay)
                continue
            if delay:
                log.info("change events resumed")
                delay = 0.0
            _honour_cancel()
            for record in records:
                self._publish(record)

    def _publish(self, record: Record) -> None:
        order = record.order
        if order <= self.order:
            return
        frame = event_frame(record)
        self.position, self.order = record.id, order
        for subscriber in tuple(self.subscribers):
            subscriber.offer(order, record.key, frame)

    async def _check_continuity(self) -> None:
        """After a Valkey failure: is the last event handed out still kept?

        If not, events that followed it may have gone unseen (the stream was
        trimmed or expired meanwhile): every subscriber is cut off, and
        subscribes again with ``since`` to learn whether it missed any.
        """
        if self.position is None:
            return
        if await self.hub.log.range(self.namespace, self.position, self.position, 1):
            return
        latest = await self.hub.log.latest(self.namespace)
        # No await from here on: a subscriber that joined meanwhile is cut off too.
        for subscriber in tuple(self.subscribers):
            subscriber.cut_off("change events were lost while Valkey failed", ErrorCode.UNAVAILABLE)
        self._moved(latest)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if not self.ready.done():
            self.ready.cancel()


class EventHub:
    """This process's feeds, one per namespace with subscribers."""

    def __init__(self, log: EventLog, metrics: Metrics) -> None:
        self.log = log
        self.metrics = metrics
        self.feeds: dict[str, Feed] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    async def subscribe(self, namespace: str, prefix: str, since: str | None) -> Subscription:
        """Join the namespace's feed; the subscription's OK fields and replay are set."""
        feed = self.feeds.get(namespace)
        if feed is None:
            feed = self.feeds[namespace] = Feed(self, namespace)
        feed.joining += 1
        try:
            await asyncio.shield(feed.ready)
        except BaseException:
            feed.joining -= 1
            self._release(feed)
            raise
        feed.joining -= 1
        subscription = Subscription(namespace, prefix, self.metrics)
        # No await between reading the position and joining: nothing falls between.
        position, order = feed.position, feed.order
        feed.subscribers.add(subscription)
        subscription.on_close = self._leave
        self.metrics.subscribers.inc()
        subscription.cursor = position
        subscription.floor = order
        if since is not None:
            try:
                await self._prepare_replay(subscription, since, position, order)
            except BaseException:
                await subscription.close()
                raise
        return subscription

    async def _prepare_replay(
        self, subscription: Subscription, since: str, position: str | None, end: Order
    ) -> None:
        """``complete``, and the replay: the events after ``since`` up to the position.

        ``since`` is known when the stream still holds it; then it holds every
        event after it too (trimming takes the oldest first). An id that is
        not kept, or not an id, gives ``complete: false``; what is kept after
        it is replayed all the same.
        """
        after = parse_id(since)
        if after is None:
            subscription.complete = False
            return
        namespace = subscription.namespace
        first = await self.log.range(namespace, since, "+", READ_COUNT + 1)
        known = bool(first) and first[0].id == since
        subscription.complete = known
        if known:
            # Live events up to ``since`` are the client's already (another server
            # sharing the Valkey may be ahead of this one's feed).
            subscription.floor = max(end, after)
        if position is None:
            return
        page = first[1:] if known else first
        replay = [r for r in page if r.order <= end]
        # More to read when the page was full and none of it lay past the position.
        more = len(first) > READ_COUNT and len(replay) == len(page)
        resume = replay[-1].id if more and replay else None
        log_ = self.log

        async def pages() -> AsyncIterator[list[Record]]:
            if replay:
                yield replay
            start = resume
            while start is not None:
                page = await log_.range(namespace, start, position, READ_COUNT + 1)
                if not page or page[0].id != start:
                    # Trimmed while we read (a replay slower than the retention).
                    subscription.cut_off("the events to replay expired before they were sent")
                    return
                rest = page[1:]
                if rest:
                    yield rest
                start = rest[-1].id if len(page) > READ_COUNT else None

        subscription.replay = pages

    def _leave(self, subscription: Subscription) -> None:
        self.metrics.subscribers.dec()
        feed = self.feeds.get(subscription.namespace)
        if feed is not None:
            feed.subscribers.discard(subscription)
            self._release(feed)

    def _release(self, feed: Feed) -> None:
        """Stop a feed nobody follows or waits for any more."""
        if not feed.subscribers and not feed.joining and self.feeds.get(feed.namespace) is feed:
            self.forget(feed)
            task = asyncio.ensure_future(feed.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def forget(self, feed: Feed) -> None:
        if self.feeds.get(feed.namespace) is feed:
            del self.feeds[feed.namespace]

    async def close(self) -> None:
        """Shutdown: stop every feed (their subscribers' connections end on their own).

        A feed waiting in XREAD BLOCK may not see its cancel until the block
        ends (seconds): closing the reader's connection ends the wait now.
        """
        feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            feed.task.cancel()
        await self.log.close()
        stopped = asyncio.gather(*(feed.stop() for feed in feeds), *self._stopping)
        # A cluster reader still connecting at the first close finishes
        # connecting after it and blocks a feed in XREAD: close it again, until
        # every feed has stopped, instead of waiting the block out.
        while not (await asyncio.wait({stopped}, timeout=CLOSE_AGAIN))[0]:
            await self.log.close()
        await stopped
        await self.log.close()  # what a reader still connecting opened meanwhile


def _honour_cancel() -> None:
    """valkey-py can swallow a cancel (storage.calls): raise it here instead."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
