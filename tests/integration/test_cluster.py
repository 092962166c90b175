"""Valise on a local Valkey Cluster: chunks spread, resharding and failover.

Each test starts its own cluster from the valkey-server binary (about two
seconds); the whole integration suite also runs on one (`make test-cluster`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
import valkey

from protocol.frames import FrameType
from storage import keys
from storage.embedded import EmbeddedValkey
from tests.support.cluster import LocalCluster
from tests.support.harness import CHUNK, Running, make_config, start_server, stop_server
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio


def node_client(cluster: LocalCluster, node: EmbeddedValkey) -> Any:
    return valkey.Valkey(host="127.0.0.1", port=node.tcp_port, password=cluster.password)


def chunks_per_node(cluster: LocalCluster, vid: str) -> list[int]:
    counts = []
    for node in cluster.primary_nodes():
        client = node_client(cluster, node)
        counts.append(len(list(client.scan_iter(match=keys.chunk_key(vid, 0)[:-1] + "*"))))
        client.close()
    return counts


def vid_of(cluster: LocalCluster, key: str) -> str | None:
    client = valkey.ValkeyCluster.from_url(cluster.url)  # type: ignore[no-untyped-call]
    try:
        vid = client.hget(keys.NamespaceKeys("").meta(key), "vid")
        return vid.decode() if vid is not None else None
    finally:
        client.close()


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture
def replicated() -> Iterator[LocalCluster]:
    """Three primaries with one replica each; a test may kill a primary."""
    with LocalCluster(primaries=3, replicas=1) as cluster:
        yield cluster


async def serve(cluster: LocalCluster, **overrides: Any) -> Running:
    return await start_server(cluster.url, make_config(valkey_cluster=True, **overrides))


@pytest_asyncio.fixture
async def on_shared(shared_cluster: LocalCluster) -> AsyncIterator[Running]:
    running = await serve(shared_cluster)
    yield running
    await stop_server(running)


async def test_chunks_of_one_file_spread_over_shards(
    shared_cluster: LocalCluster, on_shared: Running
) -> None:
    data = os.urandom(32 * CHUNK + 123)
    client = await on_shared.client()
    assert (await client.put("spread", data)).ok
    vid = vid_of(shared_cluster, "spread")
    assert vid is not None
    counts = chunks_per_node(shared_cluster, vid)
    assert sum(counts) == 33
    assert sum(1 for n in counts if n) >= 2, counts
    got = await client.get("spread")
    assert got.ok and got.data == data
    assert got.end == hashlib.sha1(data).digest()
    await client.close()


def server_connections(cluster: LocalCluster) -> int:
    """Connections open to the cluster's nodes, other than the one asking."""
    total = 0
    for node in cluster.live_nodes():
        vk = node_client(cluster, node)
        total += len(vk.client_list(_type="normal")) - 1
        vk.close()
    return total


async def test_connections_stay_few_whatever_the_file_size(shared_cluster: LocalCluster) -> None:
    """Each connection's reply parser keeps its last chunk-sized buffer, so the
    connections a transfer touches must not grow with its chunks (they did:
    one per chunk, and a 768 MiB download held 581 MiB of server memory)."""
    running = await serve(shared_cluster)
    before = server_connections(shared_cluster)
    client = await running.client()
    data = os.urandom(96 * CHUNK)
    assert (await client.put("many-chunks", data)).ok
    assert (await client.get("many-chunks")).data == data
    await client.close()
    opened = server_connections(shared_cluster) - before
    await stop_server(running)
    # Batches run 8 commands at a time; a download needs two per node at most.
    assert opened <= 3 * 10, opened


async def test_list_delete_and_room_check_on_a_cluster(on_shared: Running) -> None:
    client = await on_shared.client()
    for i in range(5):
        assert (await client.put(f"dir/{i}", b"x" * i * 1000)).ok
    listed = await client.request(FrameType.LIST, {"prefix": "dir/"})
    assert [f["key"] for f in listed.body["files"]] == [f"dir/{i}" for i in range(5)]
    assert (await client.request(FrameType.DELETE, {"key": "dir/2"})).ok
    assert (await client.request(FrameType.STAT, {"key": "dir/2"})).code == "not_found"
    usage = await on_shared.store.usage()
    assert usage[""][0] >= 4
    await client.close()


def reshard(cluster: LocalCluster, slots: int) -> None:
    """Move ``slots`` hash slots from the first primary to the second (MOVED/ASK for clients)."""
    primaries = cluster.primary_nodes()
    ids = [cluster.node_cli(n, "CLUSTER", "MYID").strip() for n in primaries[:2]]
    cluster._cli(
        "--cluster", "reshard", f"127.0.0.1:{primaries[0].tcp_port}",
        "--cluster-from", ids[0], "--cluster-to", ids[1],
        "--cluster-slots", str(slots), "--cluster-yes",
        "--cluster-pipeline", "10",
    )  # fmt: skip


async def test_transfers_complete_while_slots_move(shared_cluster: LocalCluster) -> None:
    running = await serve(shared_cluster)
    mover = threading.Thread(target=reshard, args=(shared_cluster, 2000))
    files = {f"moving/{i}": random.Random(i).randbytes(5 * CHUNK + i) for i in range(12)}
    try:
        mover.start()
        rounds = 0
        while mover.is_alive() or rounds < 2:
            rounds += 1
            client = await running.client()
            for key, data in files.items():
                put = await client.put(key, data)
                assert put.ok, put.body
                got = await client.get(key)
                assert got.ok, got.body
                assert got.data == data
            await client.close()
            await asyncio.sleep(0)
    finally:
        await asyncio.to_thread(mover.join)
        await stop_server(running)
    assert rounds >= 2


async def upload_slowly(client: WireClient, key: str, data: bytes, kill: Any) -> Any:
    """Upload in 1-chunk steps; call ``kill`` once a third of the chunks are sent."""
    await client.send(control(FrameType.PUT, {"key": key, "size": len(data)}))
    assert (await client.reply()).ok
    for i in range(0, len(data), CHUNK):
        if i == (len(data) // 3) // CHUNK * CHUNK:
            await asyncio.to_thread(kill)
        try:
            await client.send(frame(FrameType.DATA, data[i : i + CHUNK]))
        except ConnectionError:
            break
        await asyncio.sleep(0.01)
    else:
        await client.send(frame(FrameType.END, hashlib.sha1(data).digest()))
    return await client.reply()


async def test_primary_killed_mid_upload_without_replica() -> None:
    """No replica to take over: the upload fails with `unavailable`, nothing is visible."""
    with LocalCluster(primaries=3) as cluster:
        running = await serve(cluster, failover_wait=1.0, storage_timeout=3.0)
        client = await running.client()
        data = os.urandom(60 * CHUNK)
        victim = cluster.nodes[1]
        reply = await upload_slowly(client, "doomed", data, victim.kill)
        await client.close()
        assert reply.code == "unavailable", reply.body
        # Whatever the surviving shards hold of it, no file is visible there.
        for node in cluster.live_nodes():
            vk = node_client(cluster, node)
            assert not list(vk.scan_iter(match="valise:*:m:doomed"))
            vk.close()
        await stop_server(running)


async def test_primary_failover_mid_upload(replicated: LocalCluster) -> None:
    """A synced replica takes over within the failover wait: the upload completes."""
    running = await serve(replicated, storage_timeout=5.0)
    client = await running.client()
    data = os.urandom(60 * CHUNK)
    primary = replicated.primary_nodes()[1]
    reply = await upload_slowly(client, "failover", data, primary.kill)
    await client.close()
    assert reply.ok, reply.body
    await asyncio.to_thread(replicated.wait_ok)
    client = await running.client()
    got = await client.get("failover")
    assert got.ok and got.data == data, got.body
    # And the same server, not restarted, works on the healed cluster.
    assert (await client.put("after", data[:CHUNK])).ok
    assert (await client.get("after")).data == data[:CHUNK]
    await client.close()
    await stop_server(running)


async def test_primary_failover_mid_download(replicated: LocalCluster) -> None:
    """A synced replica takes over within the failover wait: the download completes."""
    running = await serve(replicated, storage_timeout=5.0)
    client = await running.client()
    data = os.urandom(60 * CHUNK)
    assert (await client.put("served", data)).ok
    await asyncio.to_thread(replicated.wait_ok)  # the replicas have the file
    await client.send(control(FrameType.GET, {"key": "served"}))
    assert (await client.reply()).ok
    received = bytearray()
    killed = False
    while True:
        got = await client.frame(timeout=30)
        assert got is not None, "connection closed inside a GET stream"
        if got.type is not FrameType.DATA:
            break
        received += got.payload
        if not killed and len(received) >= len(data) // 3:
            killed = True
            replicated.primary_nodes()[2].kill()
    assert killed
    assert got.type is FrameType.END, got.payload
    assert bytes(received) == data and got.payload == hashlib.sha1(data).digest()
    await client.close()
    await stop_server(running)
