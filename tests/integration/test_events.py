"""Change events (docs/protocol.md section 6.3): SUBSCRIBE, EVENT, replay, fan-out, bounds."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from protocol.decoder import decode_control
from protocol.frames import FrameType
from service.auth import Tokens
from storage.embedded import EmbeddedValkey
from storage.hashing import new_vid
from storage.info import FileInfo
from storage.keys import NamespaceKeys
from tests.integration.test_metrics import small_window_client
from tests.support import harness
from tests.support.harness import (
    Running,
    make_config,
    reap,
    start_process,
    start_server,
    stop_server,
)
from tests.support.wire import WireClient, control, upload_frames

pytestmark = pytest.mark.asyncio


#: Every connection a test opens, closed when it ends (see the ``opened`` fixture).
_OPEN: list[WireClient] = []


@pytest_asyncio.fixture(autouse=True)
async def opened() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().close()


async def connect(server: Running) -> WireClient:
    client = await server.client()
    _OPEN.append(client)
    return client


async def subscribe(server: Running, **body: Any) -> tuple[WireClient, dict[str, Any]]:
    """A new connection, subscribed; its OK."""
    client = await connect(server)
    reply = await client.request(FrameType.SUBSCRIBE, body)
    assert reply.ok, reply.body
    return client, reply.body


async def event(client: WireClient, timeout: float = 10.0) -> dict[str, Any]:
    frame = await client.frame(timeout)
    assert frame is not None, "connection closed"
    assert frame.type is FrameType.EVENT, (frame.type, frame.payload[:200])
    return decode_control(frame)


async def events(client: WireClient, count: int) -> list[dict[str, Any]]:
    return [await event(client) for _ in range(count)]


async def quiet(client: WireClient) -> bool:
    """True when no frame comes within a short while (an event that must not come)."""
    try:
        await client.frame(0.3)
    except TimeoutError:
        return True
    return False


async def pipelined_puts(client: WireClient, keys: list[str], batch: int = 400) -> None:
    """Upload a tiny file to each key, ``batch`` uploads in flight at once."""
    for at in range(0, len(keys), batch):
        part = keys[at : at + batch]
        await client.send(b"".join(upload_frames(k, k.encode(), ttl=120) for k in part))
        for _ in part:
            assert (await client.reply()).ok
            assert (await client.reply()).ok


def sample(server: Running, name: str, **labels: str) -> float:
    value = server.server.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_put_overwrite_and_delete_each_make_one_event(server: Running, prefix: str) -> None:
    subscriber, ok = await subscribe(server, prefix=prefix)
    assert set(ok) == {"cursor", "complete"} and ok["complete"] is True
    writer = await connect(server)
    key = prefix + "patient/t1.nii"
    first = (await writer.put(key, b"first", content_type="application/x-nifti")).body
    second = (await writer.put(key, b"second")).body
    assert (await writer.request(FrameType.DELETE, {"key": key})).body == {"deleted": True}
    # Deleting what is not there changes nothing, so it has no event.
    assert (await writer.request(FrameType.DELETE, {"key": key})).body == {"deleted": False}
    stored, overwritten, deleted = await events(subscriber, 3)
    assert stored == {"id": stored["id"], "event": "stored", **first}
    assert overwritten == {"id": overwritten["id"], "event": "stored", **second}
    assert deleted == {
        "id": deleted["id"],
        "event": "deleted",
        "key": key,
        "version": second["version"],
    }
    assert len({stored["id"], overwritten["id"], deleted["id"]}) == 3
    assert await quiet(subscriber)
    # A later subscriber's cursor is the namespace's latest event.
    _, ok = await subscribe(server)
    assert ok == {"cursor": deleted["id"], "complete": True}


async def test_prefix_is_compared_literally(server: Running, prefix: str) -> None:
    pattern = prefix + "a*?[{"
    subscriber, _ = await subscribe(server, prefix=pattern)
    writer = await connect(server)
    for key in ("a*?[{/x", "ab", "a*", "a*?[{", "a*?[{}", "b*?[{/x", "a*?[x"):
        assert (await writer.put(prefix + key, b"x")).ok
    got = [e["key"] for e in await events(subscriber, 3)]
    assert got == [prefix + "a*?[{/x", prefix + "a*?[{", prefix + "a*?[{}"]
    assert await quiet(subscriber)


async def test_replay_from_since_joins_live_events_without_gap_or_repeat(
    server: Running, prefix: str
) -> None:
    total, cut = 300, 100
    watcher, _ = await subscribe(server, prefix=prefix)
    committed: list[str] = []

    async def upload() -> None:
        writer = await connect(server)
        for i in range(total):
            reply = await writer.put(f"{prefix}{i:04d}", str(i).encode())
            committed.append(reply.body["version"])

    uploads = asyncio.create_task(upload())
    seen = await events(watcher, cut)
    # Uploads go on while the second subscriber replays the first `cut` events' successors.
    late, ok = await subscribe(server, prefix=prefix, since=seen[cut - 1]["id"])
    assert ok["complete"] is True
    seen += await events(watcher, total - cut)
    replayed = await events(late, total - cut)
    await uploads
    assert replayed == seen[cut:]
    # One event per commit, in the order the commits took effect.
    assert [e["version"] for e in seen] == committed
    assert len({e["id"] for e in seen}) == total
    assert await quiet(late)


async def test_a_long_replay_comes_whole_and_in_order(server: Running, prefix: str) -> None:
    total = 1_300  # more than two pages of the replay's reads
    watcher, _ = await subscribe(server, prefix=prefix)
    writer = await connect(server)
    await pipelined_puts(writer, [f"{prefix}{i:05d}" for i in range(total)])
    seen = await events(watcher, total)
    late, ok = await subscribe(server, prefix=prefix, since=seen[0]["id"])
    assert ok == {"cursor": seen[-1]["id"], "complete": True}
    assert await events(late, total - 1) == seen[1:]
    assert await quiet(late)


@pytest.mark.config(event_retention=1)
async def test_complete_is_false_when_events_are_no_longer_kept(
    server: Running, prefix: str, vk: Any
) -> None:
    writer = await connect(server)
    subscriber, _ = await subscribe(server, prefix=prefix)
    assert (await writer.put(prefix + "old", b"x")).ok
    old = (await event(subscriber))["id"]
    _, ok = await subscribe(server, since=old)
    assert ok["complete"] is True
    # Nothing happens for longer than the retention: the stream expires, TTL and all.
    stream = NamespaceKeys("").events
    for _ in range(100):
        if not vk.exists(stream):
            break
        await asyncio.sleep(0.1)
    assert not vk.exists(stream)
    gone, ok = await subscribe(server, prefix=prefix, since=old)
    assert ok["complete"] is False
    _, ok = await subscribe(server, since="not an event id")
    assert ok["complete"] is False
    _, ok = await subscribe(server, since="99999999999999-0")
    assert ok["complete"] is False
    # The subscription works all the same: live events follow.
    stored = (await writer.put(prefix + "new", b"y")).body
    assert await event(gone) == {"id": (await event(subscriber))["id"], "event": "stored", **stored}
    ttl = vk.pttl(stream)
    assert 0 < ttl <= 1000


async def test_two_servers_on_one_valkey_see_each_others_events(
    server: Running, valkey_server: EmbeddedValkey, prefix: str
) -> None:
    other = await start_server(valkey_server.url, make_config())
    try:
        here, _ = await subscribe(server, prefix=prefix)
        there, _ = await subscribe(other, prefix=prefix)
        writers = [await connect(server), await connect(other)]
        versions = []
        for i in range(10):
            versions.append((await writers[i % 2].put(f"{prefix}{i}", b"x")).body["version"])
        on_here = await events(here, 10)
        assert [e["version"] for e in on_here] == versions
        assert await events(there, 10) == on_here
        # An id from one server is a valid `since` on the other.
        replay, ok = await subscribe(other, prefix=prefix, since=on_here[4]["id"])
        assert ok["complete"] is True
        assert await events(replay, 5) == on_here[5:]
    finally:
        await stop_server(other)


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    path = tmp_path / "tokens"
    path.write_text("writer-a ns-a rw\nreader-a ns-a ro\nwriter-b ns-b rw\n")
    return Tokens.load(path)


async def test_namespaces_are_apart_and_read_only_tokens_subscribe(
    valkey_server: EmbeddedValkey, tokens: Tokens, prefix: str
) -> None:
    running = await start_server(valkey_server.url, make_config(tokens="tokens"), tokens)
    try:

        async def login(token: str) -> WireClient:
            client = await running.client()
            _OPEN.append(client)
            assert (await client.request(FrameType.HELLO, {"version": 1, "token": token})).ok
            return client

        reader = await login("reader-a")
        assert (await reader.request(FrameType.SUBSCRIBE, {"prefix": prefix})).ok
        writer_b, writer_a = await login("writer-b"), await login("writer-a")
        assert (await writer_b.put(prefix + "x", b"b")).ok
        stored = (await writer_a.put(prefix + "x", b"a")).body
        assert await event(reader) == {"id": ANY_ID, "event": "stored", **stored}
        assert await quiet(reader)
    finally:
        await stop_server(running)


class _AnyId:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_ID: Any = _AnyId()


async def test_a_retried_commit_has_one_event(server: Running, prefix: str) -> None:
    subscriber, _ = await subscribe(server, prefix=prefix)
    now = time.time()
    info = FileInfo(
        key=prefix + "retried",
        size=0,
        sha1=hashlib.sha1(b"").hexdigest(),
        content_type=None,
        chunk_size=server.config.chunk_size,
        chunks=0,
        created_at=now,
        expires_at=now + 60,
        vid=new_vid(),
    )
    # A commit whose reply was lost is sent again with the same version.
    await server.store.commit("", info, 60)
    await server.store.commit("", info, 60)
    writer = await connect(server)
    assert (await writer.put(prefix + "marker", b"m")).ok
    got = [e["key"] for e in await events(subscriber, 2)]
    assert got == [prefix + "retried", prefix + "marker"]


@pytest.mark.config(idle_timeout=0.5)
async def test_a_subscription_has_no_silence_limit_and_may_ping(
    server: Running, prefix: str
) -> None:
    subscriber, _ = await subscribe(server, prefix=prefix)
    await asyncio.sleep(1.5)  # three idle timeouts
    await subscriber.send(control(FrameType.PING, {"n": 1}))
    pong = await subscriber.frame()
    assert pong is not None and pong.type is FrameType.OK
    assert decode_control(pong) == {"n": 1}
    writer = await connect(server)
    assert (await writer.put(prefix + "late", b"x")).ok
    assert (await event(subscriber))["key"] == prefix + "late"
    # Anything but PING is refused.
    await subscriber.send(control(FrameType.STAT, {"key": prefix + "late"}))
    refused = await subscriber.reply()
    assert (refused.code, refused.body["fatal"]) == ("bad_frame", True)
    assert await subscriber.closed()


@pytest.mark.config(idle_timeout=120)
async def test_a_subscriber_that_never_reads_is_cut_off_alone(server: Running, prefix: str) -> None:
    if harness.CLUSTER:  # 10,000 commits: the queue's bound is the server's, on any Valkey
        pytest.skip("a stalled subscriber's bound: run once, on one valkey-server")
    total = 10_000
    stalled = await small_window_client(server)
    _OPEN.append(stalled)
    assert (await stalled.request(FrameType.SUBSCRIBE, {"prefix": prefix})).ok
    reader, _ = await subscribe(server, prefix=prefix)
    delivered_before = sample(server, "valise_events_delivered_total")
    keys = [f"{prefix}{i:05d}" for i in range(total)]
    received: list[str] = []

    async def read_all() -> None:
        while len(received) < total:
            received.append((await event(reader, timeout=60))["key"])

    reading = asyncio.create_task(read_all())
    writer = await connect(server)
    await pipelined_puts(writer, keys)
    await asyncio.wait_for(reading, 60)
    # The reader got every event, in order, while the other stalled.
    assert received == keys
    assert sample(server, "valise_subscribers_cut_off_total") == 1
    assert sample(server, "valise_subscribers") == 1
    assert sample(server, "valise_events_published_total", event="stored") >= total
    # What the stalled one finds when it reads at last: far fewer events, then the end.
    got = 0
    last: Any = None
    try:
        while (frame := await stalled.frame(timeout=15)) is not None:
            last = frame
            got += frame.type is FrameType.EVENT
    except ConnectionError:
        pass
    assert got < total // 2
    if last is not None and last.type is FrameType.ERROR:
        assert decode_control(last)["code"] == "timeout"
        assert decode_control(last)["fatal"] is True
    delivered = sample(server, "valise_events_delivered_total") - delivered_before
    assert total <= delivered < total + total // 2


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def valkey_clients(vk: Any) -> int:
    info = vk.info("clients")
    if "connected_clients" in info:
        return int(info["connected_clients"])
    return sum(int(node["connected_clients"]) for node in info.values())


@pytest_asyncio.fixture
async def process(valkey_server: EmbeddedValkey) -> AsyncIterator[tuple[int, int]]:
    proc, port = start_process(valkey_server.url)
    try:
        yield proc.pid, port
    finally:
        proc.terminate()
        reap(proc)


async def test_a_thousand_idle_subscribers_are_cheap(
    process: tuple[int, int], vk: Any, prefix: str
) -> None:
    """Measured for docs/decisions/0011-change-events.md: memory and Valkey connections."""
    pid, port = process
    one = await WireClient.connect("127.0.0.1", port)
    _OPEN.append(one)
    assert (await one.request(FrameType.SUBSCRIBE, {"prefix": prefix})).ok
    before, clients_before = rss(pid), valkey_clients(vk)
    subscribers = [one]
    for i in range(999):
        client = await WireClient.connect("127.0.0.1", port)
        _OPEN.append(client)
        await client.send(control(FrameType.SUBSCRIBE, {"prefix": f"{prefix}{i % 10}"}))
        subscribers.append(client)
    for client in subscribers[1:]:
        assert (await client.reply()).ok
    grown, clients = rss(pid) - before, valkey_clients(vk) - clients_before
    print(f"\n1000 idle subscribers: +{grown / 2**20:.1f} MiB RSS, +{clients} Valkey connections")
    assert grown < 50 * 2**20
    assert clients <= 2
    # They all still hear what happens under their prefix.
    writer = await WireClient.connect("127.0.0.1", port)
    _OPEN.append(writer)
    assert (await writer.put(f"{prefix}3/{uuid.uuid4().hex}", b"x")).ok
    for client in subscribers[4::10]:
        assert (await event(client))["event"] == "stored"
    while _OPEN:  # before the server stops, or it lingers with each of them
        await _OPEN.pop().close()
