"""HELLO, PING, STAT, DELETE, LIST and the errors of bad input, over real TCP."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from typing import Any

import pytest

from protocol.frames import FrameType
from storage import keys
from tests.support.harness import CHUNK, Running
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio


async def test_hello_announces_limits(client: WireClient) -> None:
    reply = await client.request(FrameType.HELLO, {"version": 1, "client": "test"})
    assert reply.ok
    assert reply.body["version"] == 1
    assert reply.body["server"].startswith("valise/")
    assert reply.body["max_frame"] == 64 * 1024
    assert reply.body["chunk_size"] == CHUNK
    assert {"max_file_size", "default_ttl", "max_ttl"} <= set(reply.body)


@pytest.mark.parametrize(
    ("body", "code"),
    [({"version": 2}, "bad_version"), ({}, "bad_request"), ({"version": "1"}, "bad_request")],
)
async def test_bad_hello_is_fatal(client: WireClient, body: dict[str, Any], code: str) -> None:
    reply = await client.request(FrameType.HELLO, body)
    assert reply.code == code and reply.body["fatal"] is True
    assert await client.closed()


async def test_ping_echoes_and_empty_payload_means_empty_object(client: WireClient) -> None:
    assert (await client.request(FrameType.PING, {"a": [1, "é"]})).body == {"a": [1, "é"]}
    await client.send(frame(FrameType.PING))
    assert (await client.reply()).body == {}


async def test_stat_reports_file_info(client: WireClient, prefix: str) -> None:
    before = time.time()
    assert (await client.put(prefix + "k", b"x" * 10, ttl=100, content_type="application/dicom")).ok
    info = (await client.request(FrameType.STAT, {"key": prefix + "k"})).body
    assert info["key"] == prefix + "k"
    assert info["size"] == 10
    assert info["sha1"] == hashlib.sha1(b"x" * 10).hexdigest()
    assert info["content_type"] == "application/dicom"
    assert info["chunk_size"] == CHUNK and info["chunks"] == 1
    assert before - 1 <= info["created_at"] <= time.time() + 1
    assert info["expires_at"] == pytest.approx(info["created_at"] + 100)
    assert "vid" not in info


async def test_stat_missing_is_not_found(client: WireClient, prefix: str) -> None:
    reply = await client.request(FrameType.STAT, {"key": prefix + "none"})
    assert reply.code == "not_found" and reply.body["fatal"] is False


async def test_delete(client: WireClient, prefix: str, vk: Any) -> None:
    assert (await client.put(prefix + "k", b"abc" * CHUNK)).ok
    vid = vk.hget(keys.NamespaceKeys("").meta(prefix + "k"), "vid").decode()
    assert (await client.request(FrameType.DELETE, {"key": prefix + "k"})).body == {"deleted": True}
    assert (await client.request(FrameType.DELETE, {"key": prefix + "k"})).body == {
        "deleted": False
    }
    assert (await client.get(prefix + "k")).code == "not_found"
    # Freed within grace: each chunk's TTL is now at most the grace period.
    for name in vk.scan_iter(match=f"valise:c:{vid}:*"):
        assert 0 < vk.pttl(name) <= 60_000


@pytest.mark.config(grace=0)
async def test_delete_with_zero_grace_frees_data_at_once(
    client: WireClient, prefix: str, vk: Any
) -> None:
    assert (await client.put(prefix + "k", b"abc" * CHUNK)).ok
    vid = vk.hget(keys.NamespaceKeys("").meta(prefix + "k"), "vid").decode()
    assert (await client.request(FrameType.DELETE, {"key": prefix + "k"})).ok
    await asyncio.sleep(0.05)
    assert list(vk.scan_iter(match=f"valise:*{vid}*")) == []


async def list_all(client: WireClient, prefix: str, limit: int | None = None) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        request: dict[str, Any] = {"prefix": prefix, "cursor": cursor}
        if limit:
            request["limit"] = limit
        reply = await client.request(FrameType.LIST, request)
        assert reply.ok, reply.body
        if limit:
            assert len(reply.body["files"]) <= limit
        names += [f["key"] for f in reply.body["files"]]
        cursor = reply.body["cursor"]
        if cursor is None:
            return names


async def test_list_is_literal_ordered_and_paginated(client: WireClient, prefix: str) -> None:
    names = ["a*", "a?", "a[1]", "a{x}", "a", "ab", "a/b", "b", "é", "Z", "a\\", "a%"]
    for name in names:
        assert (await client.put(prefix + name, name.encode())).ok
    everything = await list_all(client, prefix)
    assert everything == sorted((prefix + n for n in names), key=lambda k: k.encode())
    assert await list_all(client, prefix, limit=3) == everything
    # Special characters are literal: "a*" does not match "ab".
    assert await list_all(client, prefix + "a*") == [prefix + "a*"]
    assert await list_all(client, prefix + "a[") == [prefix + "a[1]"]
    assert await list_all(client, prefix + "a{") == [prefix + "a{x}"]
    # A prefix that is also a key lists itself and its extensions.
    assert await list_all(client, prefix + "ab") == [prefix + "ab"]


async def test_list_has_no_duplicates_after_reupload(client: WireClient, prefix: str) -> None:
    for _ in range(3):
        assert (await client.put(prefix + "same", b"v")).ok
    assert await list_all(client, prefix) == [prefix + "same"]


async def test_list_hides_deleted_and_in_progress(client: WireClient, prefix: str) -> None:
    assert (await client.put(prefix + "gone", b"v")).ok
    assert (await client.request(FrameType.DELETE, {"key": prefix + "gone"})).ok
    other = await WireClient.connect(*client.writer.get_extra_info("peername")[:2])
    await other.send(control(FrameType.PUT, {"key": prefix + "uploading"}))
    assert (await other.reply()).ok
    assert await list_all(client, prefix) == []
    await other.close()


async def test_list_page_fits_control_payload(client: WireClient, prefix: str) -> None:
    long = prefix + "k" * 1000
    for i in range(80):
        assert (await client.put(f"{long}{i:03d}", b"")).ok
    reply = await client.request(FrameType.LIST, {"prefix": prefix, "limit": 1000})
    assert reply.ok
    assert 0 < len(reply.body["files"]) < 80
    assert reply.body["cursor"] is not None
    assert len(await list_all(client, prefix, limit=1000)) == 80


@pytest.mark.parametrize(
    "key", ["", "a\x00b", "tab\there", "del\x7f", "x" * 1025, "é" * 513], ids=repr
)
async def test_bad_keys(client: WireClient, key: str) -> None:
    reply = await client.request(FrameType.STAT, {"key": key})
    assert reply.code == "bad_key" and reply.body["fatal"] is False
    # PUT errors are fatal: the client may already be streaming DATA.
    reply = await client.request(FrameType.PUT, {"key": key})
    assert reply.code == "bad_key" and reply.body["fatal"] is True
    assert await client.closed()


async def test_longest_key_works(client: WireClient, prefix: str) -> None:
    key = prefix + "é" * ((1024 - len(prefix)) // 2)
    assert (await client.put(key, b"ok")).ok
    assert (await client.get(key)).data == b"ok"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"key": "k", "size": True}, "bad_request"),
        ({"key": "k", "ttl": 0}, "bad_request"),
        ({"key": "k", "ttl": 86401}, "bad_request"),
        ({"key": 5}, "bad_request"),
        ({}, "bad_request"),
        ({"key": "k", "size": 64 * 1024**3 + 1}, "too_large"),
    ],
)
async def test_bad_put_is_fatal(client: WireClient, body: dict[str, Any], code: str) -> None:
    reply = await client.request(FrameType.PUT, body)
    assert reply.code == code and reply.body["fatal"] is True
    assert await client.closed()


@pytest.mark.config(max_file_size=3 * CHUNK)
async def test_streaming_past_max_file_size_is_too_large(
    client: WireClient, prefix: str, vk: Any
) -> None:
    await client.send(control(FrameType.PUT, {"key": prefix + "big"}))
    vid = (await client.reply()).body["upload_id"]
    await client.send(frame(FrameType.DATA, b"\0" * 65536) * 4 * (CHUNK // 65536))
    reply = await client.reply()
    assert reply.code == "too_large" and reply.body["fatal"] is True
    assert await client.closed()
    assert list(vk.scan_iter(match=f"valise:*{vid}*")) == []


async def test_streaming_past_declared_size_is_too_large(client: WireClient, prefix: str) -> None:
    await client.send(control(FrameType.PUT, {"key": prefix + "k", "size": 10}))
    assert (await client.reply()).ok
    await client.send(frame(FrameType.DATA, b"x" * 11))
    reply = await client.reply()
    assert reply.code == "too_large" and reply.body["fatal"] is True


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(struct.pack("!BI", 0x03, 0xFFFFFFFF), id="4GiB-length-prefix"),
        pytest.param(struct.pack("!BI", 0x02, 65537), id="oversize-control"),
        pytest.param(struct.pack("!BI", 0x42, 0), id="unknown-type"),
        pytest.param(struct.pack("!BI", 0x80, 2) + b"{}", id="server-type"),
        pytest.param(frame(FrameType.DATA, b"x"), id="data-outside-upload"),
        pytest.param(frame(FrameType.END, b"\0" * 20), id="end-outside-upload"),
        pytest.param(frame(FrameType.PING, b"[1]"), id="json-not-object"),
        pytest.param(frame(FrameType.PING, b"\xff"), id="not-utf8"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
    ],
)
async def test_bad_frames_are_fatal(client: WireClient, raw: bytes) -> None:
    await client.send(raw)
    reply = await client.reply()
    assert reply.code == "bad_frame" and reply.body["fatal"] is True
    assert await client.closed()


async def test_request_inside_upload_is_bad_frame(client: WireClient, prefix: str) -> None:
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    assert (await client.reply()).ok
    reply = await client.request(FrameType.STAT, {"key": prefix + "k"})
    assert reply.code == "bad_frame" and reply.body["fatal"] is True


async def test_bad_input_does_not_disturb_others(server: Running, prefix: str) -> None:
    good = await server.client()
    assert (await good.put(prefix + "keep", b"precious")).ok
    for _ in range(5):
        bad = await server.client()
        await bad.send(struct.pack("!BI", 0x03, 0xFFFFFFFF))
        assert (await bad.reply()).code == "bad_frame"
        await bad.close()
    assert (await good.get(prefix + "keep")).data == b"precious"
    await good.close()


@pytest.mark.config(idle_timeout=0.3)
async def test_idle_connection_gets_timeout(client: WireClient) -> None:
    reply = await client.reply()
    assert reply.code == "timeout" and reply.body["fatal"] is True
    assert await client.closed()


@pytest.mark.config(max_connections=2)
async def test_connection_limit_answers_busy(server: Running) -> None:
    one, two = await server.client(), await server.client()
    assert (await one.request(FrameType.PING, {})).ok
    assert (await two.request(FrameType.PING, {})).ok
    three = await server.client()
    reply = await three.reply()
    assert reply.code == "busy" and reply.body["fatal"] is True
    assert (await one.request(FrameType.PING, {})).ok
    for c in (one, two, three):
        await c.close()


@pytest.mark.single_node
@pytest.mark.config(grace=1)
async def test_replaced_version_is_freed_after_grace(
    client: WireClient, prefix: str, vk: Any
) -> None:
    # With active expiry off, an expired key stays in memory (and in DBSIZE)
    # until something reclaims it: only the server's own UNLINK can.
    vk.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    try:
        assert (await client.put(prefix + "k", b"old" * CHUNK)).ok  # 3 chunks + digests
        vid = vk.hget(keys.NamespaceKeys("").meta(prefix + "k"), "vid").decode()
        assert (await client.put(prefix + "k", b"new")).ok  # 1 chunk + digests
        before = vk.dbsize()
        # Still there for reads in flight...
        assert vk.exists(keys.chunk_key(vid, 0))
        # ...and unlinked by the server once the grace has passed.
        for _ in range(100):
            if vk.dbsize() <= before - 4:
                break
            await asyncio.sleep(0.05)
        assert vk.dbsize() == before - 4
    finally:
        vk.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "1")
