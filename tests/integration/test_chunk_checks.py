"""Each stored chunk's checksum (docs/decisions/0017-chunk-checksums-xxh3.md).

What this server writes: an xxh3-128 per chunk, the info naming it. What an
older server wrote (an info naming no check, SHA-1s per chunk; a resumable
upload's facts likewise) is still read, resumed and checked. The tests write
those older forms into Valkey by hand, as that server would have left them.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
import xxhash

from protocol.frames import FrameType
from storage import keys
from tests.support.harness import CHUNK, Running
from tests.support.resume import finish, resume, until, upload_stream
from tests.support.wire import WireClient

pytestmark = pytest.mark.asyncio

NS = keys.NamespaceKeys("")
SIZES = [5, 3 * CHUNK + 5]  # one small chunk (read with its info), and several


def chunks(data: bytes) -> list[bytes]:
    return [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]


def sha1s(data: bytes) -> bytes:
    return b"".join(hashlib.sha1(chunk).digest() for chunk in chunks(data))


def stored_info(vk: Any, key: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(vk.hget(NS.meta(key), "info"))
    return info


def rewrite_info(vk: Any, key: str, **change: Any) -> None:
    """The file's stored info with ``change`` (None removes a field)."""
    info = stored_info(vk, key)
    for name, value in change.items():
        if value is None:
            info.pop(name, None)
        else:
            info[name] = value
    vk.hset(NS.meta(key), "info", json.dumps(info, separators=(",", ":")))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
async def test_valkey_holds_an_xxh3_128_of_every_chunk(
    client: WireClient, prefix: str, vk: Any, size: int
) -> None:
    data = os.urandom(size)
    put = await client.put(prefix + "k", data)
    assert put.ok, put.body
    assert "check" not in put.body  # never on the wire
    assert stored_info(vk, prefix + "k")["check"] == "xxh3-128"
    held = vk.get(keys.digests_key(put.body["version"]))
    assert held == b"".join(xxhash.xxh3_128_digest(chunk) for chunk in chunks(data))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
async def test_a_file_an_older_server_wrote_is_read_and_checked(
    client: WireClient, prefix: str, vk: Any, size: int
) -> None:
    data = os.urandom(size)
    put = await client.put(prefix + "k", data)
    vid = put.body["version"]
    rewrite_info(vk, prefix + "k", check=None)
    vk.set(keys.digests_key(vid), sha1s(data), keepttl=True)
    got = await client.get(prefix + "k")
    assert got.ok, got.body
    assert (got.data, got.end) == (data, hashlib.sha1(data).digest())
    # A range: its chunks' SHA-1s are read from the middle of the list.
    part = await client.get(prefix + "k", offset=size // 2, length=size - size // 2)
    assert part.data == data[size // 2 :]
    # Still checked: a changed byte is corrupt, never served.
    vk.setrange(keys.chunk_key(vid, len(chunks(data)) - 1), 1, b"\x00\xff")
    damaged = await client.get(prefix + "k")
    assert damaged.code == "corrupt" and damaged.end is None
    assert damaged.data == data[: (len(chunks(data)) - 1) * CHUNK]


async def test_a_check_this_server_does_not_know_is_a_clear_error(
    client: WireClient, prefix: str, vk: Any
) -> None:
    data = os.urandom(2 * CHUNK)
    assert (await client.put(prefix + "k", data)).ok
    rewrite_info(vk, prefix + "k", check="blake9")
    got = await client.get(prefix + "k")
    assert got.code == "corrupt" and got.body["fatal"] is False
    assert "blake9" in got.body["message"] and got.data == b""
    assert (await client.request(FrameType.PING, {})).ok


async def test_an_upload_with_a_check_this_server_does_not_know_is_left_as_it_is(
    server: Running, prefix: str, vk: Any
) -> None:
    data = os.urandom(2 * CHUNK + 10)
    client = await server.client()
    await client.send(upload_stream(prefix + "f", data[: CHUNK + 5], size=len(data)))
    first = await client.reply()
    await client.close()
    await until(lambda: not server.server.connections)
    state = NS.upload(first.body["upload_id"])
    facts = json.loads(vk.hget(state, "meta"))
    vk.hset(state, "meta", json.dumps({**facts, "check": "blake9"}, separators=(",", ":")))
    client = await server.client()
    refused = await resume(client, first.body["upload_id"])
    assert refused.code == "corrupt" and "blake9" in refused.body["message"]
    # Nothing was discarded: a server that knows the check goes on from every byte.
    vk.hset(state, "meta", json.dumps(facts, separators=(",", ":")))
    resumed = await resume(client, first.body["upload_id"])
    assert resumed.ok and resumed.body["offset"] == CHUNK + 5, resumed.body
    assert (await finish(client, data, CHUNK + 5)).ok
    got = await client.get(prefix + "f")
    assert (got.data, got.end) == (data, hashlib.sha1(data).digest())
    await client.close()


async def test_an_upload_an_older_server_began_resumes_with_its_sha1s(
    server: Running, prefix: str, vk: Any
) -> None:
    data = os.urandom(3 * CHUNK + 5000)
    sent = 2 * CHUNK + 100  # two whole chunks and a partial one
    client = await server.client()
    await client.send(upload_stream(prefix + "f", data[:sent], size=len(data)))
    first = await client.reply()
    assert first.ok, first.body
    await client.close()
    await until(lambda: not server.server.connections)
    upload_id = first.body["upload_id"]
    # As an older server records it: facts naming no check, SHA-1s.
    state = NS.upload(upload_id)
    facts = json.loads(vk.hget(state, "meta"))
    assert facts.pop("check") == "xxh3-128"
    vk.hset(state, "meta", json.dumps(facts, separators=(",", ":")))
    assert vk.get(NS.upload_digests(upload_id)) == b"".join(
        xxhash.xxh3_128_digest(chunk) for chunk in chunks(data[: 2 * CHUNK])
    )
    vk.set(NS.upload_digests(upload_id), sha1s(data[: 2 * CHUNK]), keepttl=True)
    vk.hset(state, "tail_sha1", hashlib.sha1(data[2 * CHUNK : sent]).digest())

    client = await server.client()
    resumed = await resume(client, upload_id)
    assert resumed.ok, resumed.body
    assert resumed.body["offset"] == sent
    done = await finish(client, data, sent)
    assert done.ok, done.body
    got = await client.get(prefix + "f")
    assert (got.data, got.end) == (data, hashlib.sha1(data).digest())
    # The version keeps the check its upload began with.
    assert stored_info(vk, prefix + "f").get("check") == "sha1"
    assert vk.get(keys.digests_key(done.body["version"])) == sha1s(data)
    await client.close()
