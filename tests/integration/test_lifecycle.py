"""TTLs, dropped clients, killed servers, misconfigured or full Valkey."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from client.loadtest.spawn import start_address
from protocol.frames import FrameType
from storage.embedded import EmbeddedValkey
from tests.support import harness
from tests.support.harness import (
    CHUNK,
    ROOT,
    Running,
    make_config,
    reap,
    start_process,
    start_server,
    sync_valkey,
)
from tests.support.ports import free_port
from tests.support.wire import WireClient, control, frame


def keys_of(vk: Any, vid: str) -> list[bytes]:
    return list(vk.scan_iter(match=f"valise:*{vid}*"))


@pytest.mark.asyncio
async def test_every_key_has_a_ttl(client: WireClient, prefix: str, vk: Any) -> None:
    assert (await client.put(prefix + "a", b"x" * (3 * CHUNK), ttl=50)).ok
    assert (await client.put(prefix + "a", b"y" * CHUNK, ttl=50)).ok
    assert (await client.put(prefix + "b", b"")).ok
    assert (await client.put(prefix + "s", b"one small chunk")).ok
    await client.send(control(FrameType.PUT, {"key": prefix + "c"}))
    await client.send(frame(FrameType.DATA, b"z" * 65536) * 3)
    assert (await client.reply()).ok
    assert (await client.request(FrameType.PING, {})).code == "bad_frame"  # ends the upload
    names = list(vk.scan_iter(match="valise:*"))
    assert names
    for name in names:
        # -1: a key without a TTL. -2: gone since the scan (upload c's chunks
        # are unlinked as its connection ends), which is no leak.
        assert vk.pttl(name) != -1, name


@pytest.mark.asyncio
async def test_committed_ttls(client: WireClient, prefix: str, vk: Any) -> None:
    from storage import keys

    # Several chunks, and a small file of one (written with its commit on one node).
    for key, data in (("a", b"x" * (2 * CHUNK)), ("s", b"one small chunk")):
        assert (await client.put(prefix + key, data, ttl=500)).ok
        meta = keys.NamespaceKeys("").meta(prefix + key)
        vid = vk.hget(meta, "vid").decode()
        assert 490_000 < vk.pttl(meta) <= 500_000
        # Chunks and digests outlive the file by the grace period, for downloads in flight.
        names = keys_of(vk, vid)
        assert len(names) == len(data) // CHUNK + (len(data) % CHUNK > 0) + 1
        for name in names:
            assert 550_000 < vk.pttl(name) <= 560_000


@pytest.mark.asyncio
async def test_dropped_client_mid_upload_leaves_nothing(
    server: Running, prefix: str, vk: Any
) -> None:
    client = await server.client()
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    vid = (await client.reply()).body["upload_id"]
    await client.send(frame(FrameType.DATA, b"q" * 65536) * (3 * CHUNK // 65536))
    await asyncio.sleep(0.2)
    assert keys_of(vk, vid), "chunks were being written"
    client.writer.transport.abort()
    for _ in range(100):
        if not keys_of(vk, vid):
            break
        await asyncio.sleep(0.05)
    assert keys_of(vk, vid) == []
    probe = await server.client()
    assert (await probe.request(FrameType.STAT, {"key": prefix + "k"})).code == "not_found"
    await probe.close()


@pytest.mark.asyncio
@pytest.mark.config(staging_ttl=3, idle_timeout=30)
async def test_stalled_upload_keeps_its_chunks(server: Running, prefix: str, vk: Any) -> None:
    client = await server.client()
    data = b"s" * (2 * CHUNK)
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    vid = (await client.reply()).body["upload_id"]
    await client.send(frame(FrameType.DATA, data[:65536]) * 2)
    await asyncio.sleep(4.5)  # longer than the staging TTL: the keeper refreshed it
    assert len(keys_of(vk, vid)) == 2
    await client.send(frame(FrameType.END, hashlib.sha1(data).digest()))
    assert (await client.reply()).ok
    assert (await client.get(prefix + "k")).data == data
    await client.close()


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    """A private single valkey-server (tests that use it are marked single_node)."""
    with EmbeddedValkey(maxmemory=512 * 1024**2) as server:
        yield server


@pytest.mark.single_node
@pytest.mark.asyncio
async def test_server_killed_mid_upload_leaves_nothing_after_staging_ttl(
    own_valkey: EmbeddedValkey,
) -> None:
    proc, port = start_process(own_valkey.url, "--staging-ttl", "3", "--chunk-size", "64KiB")
    client = await WireClient.connect("127.0.0.1", port)
    await client.send(control(FrameType.PUT, {"key": "k"}))
    assert (await client.reply()).ok
    await client.send(frame(FrameType.DATA, b"k" * 65536) * 5)
    vk = sync_valkey(own_valkey.url)
    for _ in range(100):
        if len(list(vk.scan_iter(match="valise:c:*"))) >= 4:
            break
        await asyncio.sleep(0.05)
    proc.kill()
    reap(proc)
    await client.close()
    names = list(vk.scan_iter(match="valise:*"))
    assert names and all(0 < vk.pttl(n) <= 3000 for n in names)
    assert not list(vk.scan_iter(match="valise:*:m:*")), "nothing is visible"
    await asyncio.sleep(3.5)
    assert list(vk.scan_iter(match="valise:*")) == []
    vk.close()


@pytest.mark.single_node
def test_server_process_prints_address_and_stops_on_sigterm(own_valkey: EmbeddedValkey) -> None:
    proc, port = start_process(own_valkey.url)
    assert port > 0
    proc.send_signal(signal.SIGTERM)
    assert reap(proc) == 0


def test_embedded_valkey_dies_with_a_killed_server() -> None:
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--port", "0", "--valkey-maxmemory", "64MiB"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert start_address(proc.stdout.readline()) is not None
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) == 1
    child = int(children[0])
    proc.kill()
    reap(proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("valkey-server outlived a SIGKILLed server")


def start_once(valkey_url: str) -> subprocess.CompletedProcess[str]:
    """The server started on ``valkey_url``, expected to refuse and exit."""
    return subprocess.run(
        [sys.executable, "server.py", "--port", "0", "--valkey-url", valkey_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.single_node
@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("maxmemory-policy", "allkeys-lru", "noeviction"),
        ("appendonly", "yes", "persistence"),
        ("save", "3600 1", "persistence"),
    ],
)
def test_refuses_unsafe_valkey(
    own_valkey: EmbeddedValkey, setting: str, value: str, message: str
) -> None:
    vk = sync_valkey(own_valkey.url)
    vk.config_set(setting, value)
    try:
        result = start_once(own_valkey.url)
    finally:
        vk.config_set("appendonly", "no")
        vk.config_set("save", "")
        vk.config_set("maxmemory-policy", "noeviction")
        vk.close()
    assert result.returncode == 2
    assert message in result.stderr
    assert own_valkey.password not in result.stderr + result.stdout


def test_start_errors_say_which_valkey_and_what_failed(own_valkey: EmbeddedValkey) -> None:
    """Wrong password, no password, unreachable: three different lines, no secret in any."""
    path = own_valkey.socket_path
    wrong = start_once(f"unix://:not-the-password@{path}?db=0")
    assert wrong.returncode == 2
    assert f"Valkey at {path} refused the password (WRONGPASS)" in wrong.stderr
    assert "not-the-password" not in wrong.stderr + wrong.stdout
    missing = start_once(f"unix://{path}?db=0")
    assert missing.returncode == 2
    assert f"Valkey at {path} needs a password (NOAUTH)" in missing.stderr
    port = free_port()  # nothing listens there
    gone = start_once(f"valkey://:secret-pw@127.0.0.1:{port}/0")
    assert gone.returncode == 2
    assert f"cannot reach Valkey at 127.0.0.1:{port}" in gone.stderr
    assert "secret-pw" not in gone.stderr + gone.stdout
    assert "Traceback" not in wrong.stderr + missing.stderr + gone.stderr


@pytest.mark.single_node
def test_refuses_replication_through_disk(own_valkey: EmbeddedValkey) -> None:
    """A replica that would load its primary's data from an RDB file writes scans to disk."""
    vk = sync_valkey(own_valkey.url)
    vk.config_set("repl-diskless-load", "disabled")
    vk.replicaof("127.0.0.1", "1")  # role: replica (of nothing reachable)
    try:
        result = start_once(own_valkey.url)
    finally:
        vk.replicaof("NO", "ONE")
        vk.config_set("repl-diskless-load", "on-empty-db")
        vk.close()
    assert result.returncode == 2
    assert "repl-diskless-load" in result.stderr
    assert own_valkey.password not in result.stderr + result.stdout


@pytest.mark.single_node
@pytest.mark.asyncio
async def test_storage_full(own_valkey: EmbeddedValkey) -> None:
    running = await start_server(own_valkey.url, make_config())
    vk = sync_valkey(own_valkey.url)
    client = await running.client()
    try:
        assert (await client.put("kept", b"k" * CHUNK)).ok
        used = int(vk.info("memory")["used_memory"])
        vk.config_set("maxmemory", used + 4 * CHUNK)
        await asyncio.sleep(0.6)  # the server reuses memory figures for 0.5 s
        # Declared too big for what is left: refused before any byte is sent.
        reply = await client.request(FrameType.PUT, {"key": "big", "size": 10 * CHUNK})
        assert reply.code == "storage_full" and reply.body["fatal"] is True
        await client.close()
        # Undeclared: fails while streaming; the partial upload is removed.
        client = await running.client()
        await client.send(control(FrameType.PUT, {"key": "big"}))
        vid = (await client.reply()).body["upload_id"]
        await client.send(frame(FrameType.DATA, b"b" * 65536) * (40 * CHUNK // 65536))
        reply = await client.reply()
        assert reply.code == "storage_full" and reply.body["fatal"] is True
        assert keys_of(vk, vid) == []
        vk.config_set("maxmemory", 512 * 1024**2)
        await client.close()
        client = await running.client()
        assert (await client.get("kept")).data == b"k" * CHUNK
        assert (await client.put("after", b"a")).ok
    finally:
        vk.config_set("maxmemory", 512 * 1024**2)
        await client.close()
        await running.server.shutdown()
        await running.store.close()
        vk.close()


@pytest.mark.single_node
@pytest.mark.asyncio
async def test_small_put_refused_by_a_full_valkey_leaves_nothing(
    own_valkey: EmbeddedValkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-chunk file is written and committed by one script: OOM refuses all of it."""
    # Keep the PUT-time room check on its first figures, so the PUT reaches Valkey.
    monkeypatch.setattr("storage.store.MEMORY_CACHE", 3600.0)
    running = await start_server(own_valkey.url, make_config())
    vk = sync_valkey(own_valkey.url)
    client = await running.client()
    try:
        assert (await client.put("scan", b"old bytes")).ok
        before = sorted(vk.scan_iter(match="valise:*"))
        vk.config_set("maxmemory", 1)
        await client.send(control(FrameType.PUT, {"key": "scan"}))
        vid = (await client.reply()).body["upload_id"]
        new = b"new bytes" * 100
        await client.send(
            frame(FrameType.DATA, new) + frame(FrameType.END, hashlib.sha1(new).digest())
        )
        reply = await client.reply()
        assert reply.code == "storage_full" and reply.body["fatal"] is False
        assert keys_of(vk, vid) == []
        assert sorted(vk.scan_iter(match="valise:*")) == before
        vk.config_set("maxmemory", 512 * 1024**2)
        # The same connection goes on and still reads the old version.
        assert (await client.get("scan")).data == b"old bytes"
    finally:
        vk.config_set("maxmemory", 512 * 1024**2)
        await client.close()
        await running.server.shutdown()
        await running.store.close()
        vk.close()


@pytest.mark.single_node
@pytest.mark.asyncio
async def test_valkey_down_is_unavailable_then_recovers() -> None:
    port = free_port()  # restarted on it below
    first = EmbeddedValkey(tcp_port=port, maxmemory=256 * 1024**2)
    first.start()
    running = await start_server(first.url, make_config(storage_timeout=2.0))
    client = await running.client()
    try:
        assert (await client.put("k", b"v")).ok
        first.kill()
        await asyncio.sleep(0.6)  # past the 0.5 s memory-figure cache of the PUT check
        reply = await client.request(FrameType.STAT, {"key": "k"})
        assert reply.code == "unavailable" and reply.body["fatal"] is False
        reply = await client.request(FrameType.PUT, {"key": "k2"})
        assert reply.code == "unavailable" and reply.body["fatal"] is True
        second = EmbeddedValkey(tcp_port=port, maxmemory=256 * 1024**2)
        second.password = first.password
        second.start()
        try:
            await client.close()
            client = await running.client()
            assert (await client.put("k3", b"back")).ok
            assert (await client.get("k3")).data == b"back"
        finally:
            second.stop()
    finally:
        await client.close()
        await running.server.shutdown()
        await running.store.close()
        first.stop()


@pytest.mark.asyncio
@pytest.mark.config(idle_timeout=0.5)
async def test_reader_that_stops_reading_is_cut_off(server: Running, prefix: str) -> None:
    writer = await server.client()
    data = b"r" * (160 * CHUNK)  # 10 MiB: more than loopback socket buffers absorb
    assert (await writer.put(prefix + "big", data)).ok
    # A reader with a tiny receive window asks for it all and reads nothing.
    stalled = await server.client()
    sock = stalled.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await stalled.send(control(FrameType.GET, {"key": prefix + "big"}))
    await asyncio.sleep(2.0)
    # The server was not blocked: others are served, and the stalled stream ended early.
    await writer.close()
    writer = await server.client()
    assert (await writer.get(prefix + "big")).data == data
    received = 0
    while (got := await stalled.frame()) is not None and got.type is FrameType.DATA:
        received += len(got.payload)
    assert received < len(data)
    await writer.close()
    await stalled.close()


def gets_served(vk: Any) -> int:
    """GET commands Valkey has answered (every node of a cluster)."""
    if harness.CLUSTER:
        stats = vk.info("commandstats", target_nodes=vk.ALL_NODES).values()
    else:
        stats = [vk.info("commandstats")]
    return sum(s.get("cmdstat_get", {}).get("calls", 0) for s in stats)


@pytest.mark.asyncio
async def test_reader_that_stops_reading_stops_the_fetching(
    server: Running, prefix: str, vk: Any
) -> None:
    writer = await server.client()
    data = b"f" * (400 * CHUNK)  # 25 MiB: well beyond what loopback sockets hold
    assert (await writer.put(prefix + "big", data)).ok
    stalled = await server.client()
    stalled.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    before = gets_served(vk)
    await stalled.send(control(FrameType.GET, {"key": prefix + "big"}))
    await asyncio.sleep(1.0)
    # The server read what the sockets absorbed plus its few chunks, not the file.
    fetched = gets_served(vk) - before
    assert 0 < fetched < 200
    await asyncio.sleep(0.5)
    assert gets_served(vk) - before == fetched
    await writer.close()
    await stalled.close()


@pytest.mark.asyncio
async def test_shutdown_lets_uploads_finish_then_says_shutting_down(
    valkey_server: EmbeddedValkey, prefix: str
) -> None:
    running = await start_server(valkey_server.url, make_config(shutdown_grace=5.0))
    uploader, idle = await running.client(), await running.client()
    assert (await idle.request(FrameType.PING, {})).ok
    await uploader.send(control(FrameType.PUT, {"key": prefix + "k"}))
    assert (await uploader.reply()).ok
    data = b"u" * (2 * CHUNK)
    await uploader.send(frame(FrameType.DATA, data[:65536]))
    stopping = asyncio.create_task(running.server.shutdown())
    # The idle connection is told at once; the upload may still finish.
    reply = await idle.reply()
    assert reply.code == "shutting_down"
    assert reply.body["fatal"] is True
    await uploader.send(frame(FrameType.DATA, data[65536:]))
    await uploader.send(frame(FrameType.END, hashlib.sha1(data).digest()))
    done = await uploader.reply()
    assert done.ok
    assert done.body["size"] == len(data)
    assert (await uploader.reply()).code == "shutting_down"
    # Told, both clients hang up, as real ones do: else the server lingers for
    # their input (service/peer.py) and shutdown waits out the whole grace.
    await uploader.close()
    await idle.close()
    await stopping
    with pytest.raises(ConnectionError):
        await WireClient.connect(running.host, running.port)
    await running.store.close()


@pytest.mark.asyncio
async def test_sigterm_lets_an_upload_finish_with_the_private_valkey() -> None:
    args = ["--valkey-maxmemory", "256MiB", "--chunk-size", "64KiB", "--shutdown-grace", "10"]
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, read with a blocking readline
        [sys.executable, "server.py", "--port", "0", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    client = await WireClient.connect("127.0.0.1", port)
    data = b"t" * (5 * CHUNK)
    await client.send(control(FrameType.PUT, {"key": "k"}) + frame(FrameType.DATA, data[:CHUNK]))
    assert (await client.reply()).ok
    proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    # Still accepting our DATA: the private Valkey outlives the SIGTERM.
    await client.send(frame(FrameType.DATA, data[CHUNK:]))
    await client.send(frame(FrameType.END, hashlib.sha1(data).digest()))
    stored = await client.reply()
    assert stored.ok, stored.body
    assert stored.body["size"] == len(data)
    assert (await client.reply()).code == "shutting_down"
    await client.close()
    assert await asyncio.to_thread(reap, proc) == 0
