"""Resumable uploads on the wire (docs/protocol.md section 6.1): PUT, RESUME, END, ABORT.

Links are cut for real by tests/integration/test_resume_faults.py; here the
client simply hangs up, and every upload finishes bit for bit, checked with
STAT and GET.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest

from protocol.frames import FrameType
from storage import keys
from tests.support.harness import CHUNK, Running
from tests.support.resume import finish, resume, send_quietly, until, upload_stream
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio


async def hang_up(server: Running, key: str, data: bytes, **put: Any) -> dict[str, Any]:
    """PUT resumable, send ``data``, hang up; the first OK, once the server let go."""
    client = await server.client()
    await client.send(upload_stream(key, data, **put))
    first = await client.reply()
    assert first.ok, first.body
    await client.close()
    await until(lambda: not server.server.connections)
    return first.body


async def stored(client: WireClient, key: str, data: bytes) -> None:
    """STAT and GET show exactly ``data``."""
    info = await client.request(FrameType.STAT, {"key": key})
    assert info.ok, info.body
    assert (info.body["size"], info.body["sha1"]) == (len(data), hashlib.sha1(data).hexdigest())
    got = await client.get(key)
    assert got.ok, got.body
    assert got.data == data
    assert got.end == hashlib.sha1(data).digest()


def state_keys(vk: Any, upload_id: str, namespace: str = "") -> list[bytes]:
    ns = keys.NamespaceKeys(namespace)
    return [ns.upload(upload_id), ns.upload_digests(upload_id)]


async def test_hello_offers_resume(client: WireClient) -> None:
    hello = await client.request(FrameType.HELLO, {"version": 1})
    assert "resume" in hello.body["features"]


async def test_resumable_put_says_so_and_completes_in_one_go(
    client: WireClient, prefix: str
) -> None:
    data = os.urandom(3 * CHUNK + 123)
    await client.send(upload_stream(prefix + "scan", data))
    first = await client.reply()
    assert first.ok
    assert first.body["resumable"] is True
    assert first.body["offset"] == 0
    assert first.body["chunk_size"] == CHUNK
    assert isinstance(first.body["resume_until"], float)
    upload_id = first.body["upload_id"]
    assert 22 <= len(upload_id) <= 128  # at least 128 random bits, base64url
    done = await finish(client, data, len(data))
    assert done.ok, done.body
    await stored(client, prefix + "scan", data)
    # Committed: the id is spent.
    again = await resume(client, upload_id)
    assert (again.code, again.body["fatal"]) == ("not_found", False)


async def test_ids_are_fresh_and_not_the_version(client: WireClient, prefix: str) -> None:
    ids = set()
    for n in range(3):
        await client.send(upload_stream(f"{prefix}{n}", b"x"))
        first = await client.reply()
        done = await finish(client, b"x", 1)
        assert done.ok
        assert first.body["upload_id"] != done.body["version"]
        ids.add(first.body["upload_id"])
    assert len(ids) == 3


@pytest.mark.parametrize(
    "sent",
    [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 5000],
    ids=lambda n: f"{n}B",
)
async def test_a_hung_up_upload_resumes_from_every_byte_read(
    server: Running, prefix: str, sent: int
) -> None:
    data = os.urandom(3 * CHUNK + 5000)
    first = await hang_up(server, prefix + "f", data[:sent], size=len(data))
    client = await server.client()
    resumed = await resume(client, first["upload_id"])
    assert resumed.ok, resumed.body
    assert resumed.body == {
        "upload_id": first["upload_id"],
        "key": prefix + "f",
        "offset": sent,
        "size": len(data),
        "chunk_size": CHUNK,
        "resume_until": resumed.body["resume_until"],
    }
    assert resumed.body["resume_until"] >= first["resume_until"]
    done = await finish(client, data, sent)
    assert done.ok, done.body
    await stored(client, prefix + "f", data)
    await client.close()


async def test_resumed_many_times_without_new_bytes(server: Running, prefix: str) -> None:
    data = os.urandom(CHUNK + 999)
    first = await hang_up(server, prefix + "f", data[: CHUNK + 500])
    for _ in range(3):
        client = await server.client()
        resumed = await resume(client, first["upload_id"])
        assert resumed.body["offset"] == CHUNK + 500
        await client.close()
        await until(lambda: not server.server.connections)
    client = await server.client()
    resumed = await resume(client, first["upload_id"])
    assert (await finish(client, data, resumed.body["offset"])).ok
    await stored(client, prefix + "f", data)
    await client.close()


async def test_zero_byte_and_one_chunk_files(server: Running, prefix: str) -> None:
    for name, data, sent in [
        ("empty", b"", 0),
        ("one", os.urandom(CHUNK), CHUNK // 2),
        ("exact", os.urandom(CHUNK), CHUNK),
        ("small", b"tiny scan", 4),
    ]:
        first = await hang_up(server, prefix + name, data[:sent], size=len(data))
        client = await server.client()
        resumed = await resume(client, first["upload_id"])
        assert resumed.body["offset"] == sent
        done = await finish(client, data, sent)
        assert done.ok, done.body
        assert done.body["chunks"] == (1 if data else 0)
        await stored(client, prefix + name, data)
        await client.close()


async def test_wrong_whole_file_digest_after_a_resume_discards_the_upload(
    server: Running, prefix: str, vk: Any
) -> None:
    data = os.urandom(2 * CHUNK + 10)
    first = await hang_up(server, prefix + "f", data[: CHUNK + 10])
    client = await server.client()
    resumed = await resume(client, first["upload_id"])
    # The bytes after the break differ from what the client claims at END.
    wrong = data[: CHUNK + 10] + bytes(len(data) - CHUNK - 10)
    done = await finish(client, wrong, CHUNK + 10, digest=hashlib.sha1(data).digest())
    assert done.code == "checksum_mismatch"
    assert done.body["fatal"] is False
    assert done.body["expected"] == hashlib.sha1(data).hexdigest()
    assert done.body["actual"] == hashlib.sha1(wrong).hexdigest()
    assert resumed.ok
    missing = await client.request(FrameType.STAT, {"key": prefix + "f"})
    assert missing.code == "not_found"
    gone = await resume(client, first["upload_id"])
    assert gone.code == "not_found"
    assert not any(vk.exists(name) for name in state_keys(vk, first["upload_id"]))
    await client.close()


async def test_size_mismatch_discards_the_upload(server: Running, prefix: str) -> None:
    data = os.urandom(CHUNK + 10)
    first = await hang_up(server, prefix + "f", data[:100], size=len(data) + 1)
    client = await server.client()
    await resume(client, first["upload_id"])
    done = await finish(client, data, 100)
    assert (done.code, done.body["fatal"]) == ("size_mismatch", False)
    assert (await resume(client, first["upload_id"])).code == "not_found"
    await client.close()


async def test_a_damaged_stored_chunk_is_never_built_upon(
    server: Running, prefix: str, vk: Any
) -> None:
    data = os.urandom(2 * CHUNK + 10)
    first = await hang_up(server, prefix + "f", data[: 2 * CHUNK])
    meta = vk.hget(keys.NamespaceKeys("").upload(first["upload_id"]), "meta")
    vid = json.loads(meta)["vid"]
    vk.setrange(keys.chunk_key(vid, 1), 100, b"\x00not the scan\x00")
    client = await server.client()
    damaged = await resume(client, first["upload_id"])
    assert (damaged.code, damaged.body["fatal"]) == ("not_found", False)
    assert "damaged" in damaged.body["message"]
    assert not vk.exists(keys.chunk_key(vid, 0))
    await client.close()


async def test_abort_discards_a_resumable_upload_and_its_bytes(
    server: Running, prefix: str, vk: Any
) -> None:
    data = os.urandom(CHUNK + 10)
    first = await hang_up(server, prefix + "f", data)
    meta = vk.hget(keys.NamespaceKeys("").upload(first["upload_id"]), "meta")
    vid = json.loads(meta)["vid"]
    client = await server.client()
    await resume(client, first["upload_id"])
    await client.send(control(FrameType.ABORT))
    assert (await client.reply()).body == {"aborted": True}
    assert (await resume(client, first["upload_id"])).code == "not_found"
    assert (await client.request(FrameType.STAT, {"key": prefix + "f"})).code == "not_found"
    leftovers = [
        name
        for pattern in (f"valise:c:{vid}:*", f"valise:p:{vid}:*", f"valise:s:{vid}")
        for name in vk.scan_iter(match=pattern)
    ]
    assert leftovers == []
    assert not any(vk.exists(name) for name in state_keys(vk, first["upload_id"]))
    await client.close()


@pytest.mark.config(resume_ttl=600)
async def test_every_key_of_a_resumable_upload_has_a_ttl(
    server: Running, prefix: str, vk: Any
) -> None:
    first = await hang_up(server, prefix + "f", os.urandom(2 * CHUNK + 500))
    ns = keys.NamespaceKeys("")
    vid = json.loads(vk.hget(ns.upload(first["upload_id"]), "meta"))["vid"]
    names = [*state_keys(vk, first["upload_id"]), ns.uploads.encode()]
    names += [n for p in (f"valise:c:{vid}:*", f"valise:p:{vid}:*") for n in vk.scan_iter(match=p)]
    assert len(names) == 3 + 2 + 1  # state, digests, index; two chunks; the partial one
    ttls = {name: vk.pttl(name) for name in names}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    # The upload's own keys go with its deadline (chunks one keeper period later).
    assert all(ttls[name] <= (600 + 60) * 1000 for name in names if name != ns.uploads.encode())
    client = await server.client()
    await resume(client, first["upload_id"])
    await client.send(control(FrameType.ABORT))
    assert (await client.reply()).ok
    await client.close()


async def test_unknown_and_malformed_ids(client: WireClient) -> None:
    unknown = await resume(client, "no-such-upload")
    assert (unknown.code, unknown.body["fatal"]) == ("not_found", False)
    malformed = await client.request(FrameType.RESUME, {"upload_id": "x" * 129})
    assert (malformed.code, malformed.body["fatal"]) == ("bad_request", False)
    assert (await client.request(FrameType.PING, {"still": "here"})).body == {"still": "here"}


async def test_data_behind_a_refused_resume_is_bad_frame(client: WireClient) -> None:
    await send_quietly(
        client, control(FrameType.RESUME, {"upload_id": "gone"}) + frame(FrameType.DATA, b"d")
    )
    assert (await client.reply()).code == "not_found"
    refused = await client.reply()
    assert (refused.code, refused.body["fatal"]) == ("bad_frame", True)
