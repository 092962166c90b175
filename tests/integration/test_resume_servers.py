"""A resumable upload outlives its server: its state is in Valkey (docs/protocol.md 6.1).

RESUME on a second server, after a SIGKILL, under --workers; two connections
racing for one upload; the resume window running out; namespaces, read-only
tokens, --max-resumable, and the metrics that count all of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from protocol.frames import FrameType
from service.auth import Tokens
from storage import keys
from storage.embedded import EmbeddedValkey
from tests.support.harness import (
    CHUNK,
    Running,
    make_config,
    reap,
    start_process,
    start_server,
    stop_server,
    sync_valkey,
)
from tests.support.http import Http, http_address
from tests.support.resume import finish, resume, until, upload_stream
from tests.support.tus import TUS, create, meta
from tests.support.wire import WireClient, control

pytestmark = pytest.mark.asyncio


def state_of(vk: Any, upload_id: str, namespace: str = "") -> dict[bytes, bytes]:
    """The upload's state hash, as Valkey holds it (empty once it is gone)."""
    state: dict[bytes, bytes] = vk.hgetall(keys.NamespaceKeys(namespace).upload(upload_id))
    return state


def leftovers(vk: Any, vid: str) -> list[bytes]:
    """Every key still holding bytes of version ``vid``."""
    patterns = (f"valise:c:{vid}:*", f"valise:p:{vid}:*", f"valise:s:{vid}")
    return [name for pattern in patterns for name in vk.scan_iter(match=pattern)]


async def begin(client: WireClient, key: str, data: bytes, **put: Any) -> str:
    """PUT resumable on ``client``, then ``data``: the upload id."""
    stream = upload_stream(key, data, **put)
    await client.send(stream)
    first = await client.reply()
    assert first.ok, first.body
    return str(first.body["upload_id"])


async def stored(client: WireClient, key: str, data: bytes) -> None:
    got = await client.get(key)
    assert got.ok, got.body
    assert got.data == data
    assert got.body["sha1"] == hashlib.sha1(data).hexdigest()


async def test_resume_on_a_second_server(
    server: Running, valkey_server: EmbeddedValkey, prefix: str
) -> None:
    other = await start_server(valkey_server.url, make_config())
    try:
        data = os.urandom(3 * CHUNK + 99)
        first = await server.client()
        upload_id = await begin(first, prefix + "f", data[: 2 * CHUNK + 7])
        await first.close()
        await until(lambda: not server.server.connections)
        second = await other.client()
        resumed = await resume(second, upload_id)
        assert resumed.body["offset"] == 2 * CHUNK + 7
        assert (await finish(second, data, 2 * CHUNK + 7)).ok
        await second.close()
        check = await server.client()
        await stored(check, prefix + "f", data)
        await check.close()
    finally:
        await stop_server(other)


async def test_server_killed_mid_upload_resumes_on_a_new_server(
    server: Running, valkey_server: EmbeddedValkey, vk: Any, prefix: str
) -> None:
    proc, port = start_process(valkey_server.url, "--chunk-size", "64KiB")
    try:
        data = os.urandom(4 * CHUNK + 500)
        doomed = await WireClient.connect("127.0.0.1", port)
        upload_id = await begin(doomed, prefix + "f", data[: 3 * CHUNK + 500])
        # Three chunks recorded in Valkey; the last 500 bytes only in the server's memory.
        await until(lambda: int(state_of(vk, upload_id).get(b"chunks", 0)) == 3)
        proc.kill()
        await doomed.close()
    finally:
        proc.kill()
        reap(proc)
    client = await server.client()
    resumed = await resume(client, upload_id)
    assert resumed.body["offset"] == 3 * CHUNK  # what died with the server was never stored
    assert (await finish(client, data, 3 * CHUNK)).ok
    await stored(client, prefix + "f", data)
    await client.close()


async def test_resume_under_workers(valkey_server: EmbeddedValkey, vk: Any, prefix: str) -> None:
    proc, port = start_process(valkey_server.url, "--workers", "2", "--chunk-size", "64KiB")
    try:
        data = os.urandom(4 * CHUNK + 4321)
        client = await WireClient.connect("127.0.0.1", port)
        upload_id = await begin(client, prefix + "f", data[:5000])
        await client.close()
        offset = 5000
        for step in (CHUNK, 2 * CHUNK + 1, 3 * CHUNK + 17):
            # Whichever worker had it has let go (and recorded where it stopped).
            await until(lambda: state_of(vk, upload_id).get(b"owner") == b"")
            client = await WireClient.connect("127.0.0.1", port)
            resumed = await resume(client, upload_id)
            assert resumed.body["offset"] == offset
            await client.send(upload_stream("", data[offset:step]).split(b"}", 1)[1])
            await client.close()
            offset = step
        await until(lambda: state_of(vk, upload_id).get(b"owner") == b"")
        client = await WireClient.connect("127.0.0.1", port)
        resumed = await resume(client, upload_id)
        assert resumed.body["offset"] == offset
        assert (await finish(client, data, offset)).ok
        await stored(client, prefix + "f", data)
        await client.close()
    finally:
        proc.terminate()
        reap(proc)


async def test_an_older_connection_on_another_server_is_superseded_at_its_next_chunk(
    server: Running, valkey_server: EmbeddedValkey, prefix: str
) -> None:
    other = await start_server(valkey_server.url, make_config())
    try:
        data = os.urandom(2 * CHUNK + 3)
        old = await other.client()
        upload_id = await begin(old, prefix + "f", data[:1000])  # still connected
        new = await server.client()
        resumed = await resume(new, upload_id)
        # The other server had not stored those 1000 bytes yet: they do not count.
        assert resumed.body["offset"] == 0
        # The old connection goes on; its first chunk write finds the upload taken.
        await old.send(upload_stream("", data[1000 : CHUNK + 1000]).split(b"}", 1)[1])
        lost = await old.reply()
        assert (lost.code, lost.body["fatal"]) == ("superseded", True)
        assert (await finish(new, data, 0)).ok
        await stored(new, prefix + "f", data)
        await old.close()
        await new.close()
    finally:
        await stop_server(other)


async def test_two_connections_racing_to_resume(server: Running, prefix: str) -> None:
    data = os.urandom(2 * CHUNK + 5)
    first = await server.client()
    upload_id = await begin(first, prefix + "f", data[: CHUNK + 5])
    await first.close()
    await until(lambda: not server.server.connections)
    a, b = await server.client(), await server.client()
    request = control(FrameType.RESUME, {"upload_id": upload_id})
    await asyncio.gather(a.send(request), b.send(request))
    replies = await asyncio.gather(a.reply(), b.reply())
    # Both were answered, from the same offset; the older holder is now superseded.
    assert [r.body["offset"] for r in replies] == [CHUNK + 5, CHUNK + 5]
    ends = await asyncio.gather(finish(a, data, CHUNK + 5), finish(b, data, CHUNK + 5))
    assert sorted(str(end.code) for end in ends) == ["None", "superseded"]
    loser = next(end for end in ends if not end.ok)
    assert loser.body["fatal"] is True
    check = await server.client()
    await stored(check, prefix + "f", data)
    for client in (a, b, check):
        await client.close()


@pytest.mark.config(resume_ttl=1)
async def test_an_upload_nobody_resumes_is_gone_after_its_deadline(
    server: Running, vk: Any, prefix: str
) -> None:
    client = await server.client()
    upload_id = await begin(client, prefix + "f", os.urandom(2 * CHUNK + 10))
    await client.close()
    await until(lambda: not server.server.connections)
    vid = json.loads(state_of(vk, upload_id)[b"meta"])["vid"]
    assert leftovers(vk, vid)
    # No sweeper: the TTLs do it, the state at the deadline, the bytes soon after.
    await until(lambda: not state_of(vk, upload_id), timeout=15)
    client = await server.client()
    assert (await resume(client, upload_id)).code == "not_found"
    await until(lambda: not leftovers(vk, vid), timeout=15)
    # The next resumable PUT in the namespace notices it expired.
    registry = server.server.metrics.registry
    await begin(client, prefix + "g", b"")
    expired = registry.get_sample_value("valise_resumable_uploads_total", {"event": "expired"})
    assert expired is not None and expired >= 1
    await client.send(control(FrameType.ABORT))
    assert (await client.reply()).ok
    await client.close()


@pytest.mark.config(resume_ttl=1)
async def test_a_connected_upload_outlives_the_resume_window(server: Running, prefix: str) -> None:
    """Arriving bytes push the deadline, whole chunks or not: a slow upload is never lost."""
    data = os.urandom(16_000)
    client = await server.client()
    upload_id = await begin(client, prefix + "f", b"")
    for at in range(0, len(data), 2000):
        await asyncio.sleep(0.3)  # 2.4 s in all, well past a deadline that never moved
        await client.send(upload_stream("", data[at : at + 2000]).split(b"}", 1)[1])
    assert (await finish(client, data, len(data))).ok
    assert (await resume(client, upload_id)).code == "not_found"
    await stored(client, prefix + "f", data)
    await client.close()


# -- namespaces and limits ----------------------------------------------------------


@pytest_asyncio.fixture
async def secured(
    valkey_server: EmbeddedValkey, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    """A server with tokens for two namespaces of its own (fresh names per test)."""
    here, there = f"ns-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "tokens"
    path.write_text(f"alice {here} rw\nbob {here} ro\ncarol {there} rw\n")
    marker = request.node.get_closest_marker("config")
    config = make_config(tokens=str(path), **(marker.kwargs if marker else {}))
    running = await start_server(valkey_server.url, config, Tokens.load(path))
    yield running
    await stop_server(running)


async def login(server: Running, token: str) -> WireClient:
    client = await server.client()
    assert (await client.request(FrameType.HELLO, {"version": 1, "token": token})).ok
    return client


async def test_another_namespaces_id_is_not_found(secured: Running, prefix: str) -> None:
    alice = await login(secured, "alice")
    upload_id = await begin(alice, prefix + "f", b"radiology bytes")
    await alice.close()
    await until(lambda: not secured.server.connections)
    carol = await login(secured, "carol")
    foreign = await resume(carol, upload_id)
    assert (foreign.code, foreign.body["fatal"]) == ("not_found", False)
    bob = await login(secured, "bob")
    read_only = await resume(bob, upload_id)
    assert (read_only.code, read_only.body["fatal"]) == ("forbidden", False)
    alice = await login(secured, "alice")
    resumed = await resume(alice, upload_id)
    assert resumed.body["offset"] == len(b"radiology bytes")
    assert (await finish(alice, b"radiology bytes, all of them", 15)).ok
    await stored(alice, prefix + "f", b"radiology bytes, all of them")
    for client in (alice, bob, carol):
        await client.close()


@pytest.mark.config(max_resumable=2, http_port=0)
async def test_max_resumable_per_namespace(secured: Running, prefix: str) -> None:
    # Two uploads left open: one by a client that hung up, one tus upload.
    alice = await login(secured, "alice")
    ids = [await begin(alice, f"{prefix}0", b"")]
    await alice.close()
    web = Http(http_address(secured), token="alice")
    try:
        await create(web, f"{prefix}1", 10)
        third = {**TUS, "Upload-Length": "10", "Upload-Metadata": meta(key=f"{prefix}2")}
        refused = await web("POST", "/v1/uploads/", headers=third)
        assert (refused.status, refused.code) == (503, "busy")
        assert "--max-resumable" in refused.json()["message"]
    finally:
        web.close()
    carol = await login(secured, "carol")  # another namespace has its own count
    await begin(carol, prefix + "c", b"")
    await carol.close()
    alice = await login(secured, "alice")
    await alice.send(control(FrameType.PUT, {"key": prefix + "x", "resumable": True}))
    full = await alice.reply()
    assert (full.code, full.body["fatal"]) == ("busy", True)
    assert "--max-resumable" in full.body["message"]
    await alice.close()
    alice = await login(secured, "alice")
    assert (await alice.put(prefix + "plain", b"not resumable")).ok  # unaffected
    await resume(alice, ids[0])
    await alice.send(control(FrameType.ABORT))
    assert (await alice.reply()).ok
    assert await begin(alice, prefix + "y", b"")  # room again
    await alice.close()


async def test_metrics_count_resumable_uploads(server: Running, prefix: str) -> None:
    registry = server.server.metrics.registry

    def count(event: str) -> float:
        return registry.get_sample_value("valise_resumable_uploads_total", {"event": event}) or 0

    def saved() -> float:
        return registry.get_sample_value("valise_resume_saved_bytes_total") or 0

    def published() -> float:
        sample = registry.get_sample_value
        return sample("valise_events_published_total", {"event": "stored"}) or 0

    before = {e: count(e) for e in ("started", "resumed", "completed")}
    saved_before = saved()
    published_before = published()
    data = os.urandom(CHUNK + 300)
    client = await server.client()
    upload_id = await begin(client, prefix + "f", data[:CHUNK])
    await client.close()
    await until(lambda: not server.server.connections)
    client = await server.client()
    await resume(client, upload_id)
    assert (await finish(client, data, CHUNK)).ok
    await client.close()
    assert {e: count(e) - before[e] for e in before} == {"started": 1, "resumed": 1, "completed": 1}
    assert published() - published_before == 1  # its commit's change event
    assert saved() - saved_before == CHUNK


async def test_shutdown_keeps_an_upload_in_progress(
    valkey_server: EmbeddedValkey, prefix: str
) -> None:
    config = dataclasses.replace(make_config(), shutdown_grace=0.2)
    first = await start_server(valkey_server.url, config)
    data = os.urandom(CHUNK + 77)
    client = await first.client()
    upload_id = await begin(client, prefix + "f", data[:1000])
    stopping = asyncio.create_task(stop_server(first))
    assert (await client.reply()).code == "shutting_down"
    await client.close()
    await stopping
    second = await start_server(valkey_server.url, make_config())
    client = await second.client()
    resumed = await resume(client, upload_id)
    assert resumed.body["offset"] == 1000
    assert (await finish(client, data, 1000)).ok
    await stored(client, prefix + "f", data)
    await client.close()
    await stop_server(second)


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey(maxmemory=512 * 1024**2) as valkey:
        yield valkey


@pytest.mark.single_node
async def test_staging_counts_against_valkey_memory(
    own_valkey: EmbeddedValkey, prefix: str
) -> None:
    running = await start_server(own_valkey.url, make_config())
    vk = sync_valkey(own_valkey.url)
    try:
        data = os.urandom(40 * CHUNK)
        client = await running.client()
        upload_id = await begin(client, prefix + "f", data[:CHUNK], size=len(data))
        vk.config_set("maxmemory", int(vk.info("memory")["used_memory"]) + 4 * CHUNK)
        await client.send(upload_stream("", data[CHUNK:]).split(b"}", 1)[1])
        full = await client.reply()
        assert (full.code, full.body["fatal"]) == ("storage_full", True)
        await client.close()
        await until(lambda: not running.server.connections)
        # Still no room for the rest of the declared size: RESUME says so, the upload stays.
        client = await running.client()
        await asyncio.sleep(0.6)  # the server reuses memory figures for 0.5 s
        refused = await resume(client, upload_id)
        assert (refused.code, refused.body["fatal"]) == ("storage_full", False)
        vk.config_set("maxmemory", 512 * 1024**2)
        await asyncio.sleep(0.6)
        resumed = await resume(client, upload_id)
        assert CHUNK <= resumed.body["offset"] < len(data)
        assert (await finish(client, data, resumed.body["offset"])).ok
        await stored(client, prefix + "f", data)
        await client.close()
    finally:
        vk.config_set("maxmemory", 512 * 1024**2)
        vk.close()
        await stop_server(running)
