"""Uploads and downloads over real TCP against a real valkey-server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from typing import Any

import pytest

from protocol.frames import FrameType
from storage import keys
from tests.support.harness import CHUNK, Running
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 11 * CHUNK + 7], ids=lambda s: f"{s}B"
)
async def test_round_trip_is_bit_for_bit(client: WireClient, prefix: str, size: int) -> None:
    data = payload(size, seed=size)
    stored = await client.put(prefix + "scan", data)
    assert stored.ok, stored.body
    assert stored.body["size"] == size
    assert stored.body["sha1"] == hashlib.sha1(data).hexdigest()
    assert stored.body["chunks"] == -(-size // CHUNK)
    got = await client.get(prefix + "scan")
    assert got.ok
    assert got.data == data
    assert got.end == hashlib.sha1(data).digest()
    assert got.body["offset"] == 0 and got.body["length"] == size
    assert all(len(f.payload) <= 64 * 1024 for f in got.frames)


async def test_random_frame_sizes_and_chunk_order(client: WireClient, prefix: str) -> None:
    data = payload(13 * CHUNK + 123, seed=7)
    rng = random.Random(1)
    frames = [control(FrameType.PUT, {"key": prefix + "f"})]
    at = 0
    while at < len(data):
        step = rng.choice([0, 1, 17, 4096, 65535, 65536])
        frames.append(frame(FrameType.DATA, data[at : at + step]))
        at += step
    frames.append(frame(FrameType.END, hashlib.sha1(data).hexdigest().encode()))
    await client.send(b"".join(frames))
    assert (await client.reply()).ok
    assert (await client.reply()).ok
    assert (await client.get(prefix + "f")).data == data


@pytest.mark.parametrize("spelling", ["raw", "lower", "upper"])
async def test_end_digest_spellings(client: WireClient, prefix: str, spelling: str) -> None:
    data = b"brain scan"
    sha = hashlib.sha1(data)
    digest = {
        "raw": sha.digest(),
        "lower": sha.hexdigest().encode(),
        "upper": sha.hexdigest().upper().encode(),
    }[spelling]
    assert (await client.put(prefix + "k", data, digest=digest)).ok


async def test_checksum_mismatch_keeps_old_version(client: WireClient, prefix: str) -> None:
    old = payload(3 * CHUNK, seed=1)
    assert (await client.put(prefix + "k", old)).ok
    new = payload(2 * CHUNK, seed=2)
    bad = await client.put(prefix + "k", new, digest=b"\x00" * 20)
    assert bad.code == "checksum_mismatch"
    assert bad.body["fatal"] is False
    assert bad.body["expected"] == "00" * 20
    assert bad.body["actual"] == hashlib.sha1(new).hexdigest()
    # Not fatal: the same connection still works and still sees the old file.
    assert (await client.get(prefix + "k")).data == old


async def test_size_mismatch_keeps_old_version(client: WireClient, prefix: str) -> None:
    assert (await client.put(prefix + "k", b"old")).ok
    bad = await client.put(prefix + "k", b"new bytes", size=100)
    assert bad.code == "size_mismatch" and bad.body["fatal"] is False
    assert (await client.get(prefix + "k")).data == b"old"


async def test_failed_upload_leaves_no_chunks(client: WireClient, prefix: str, vk: Any) -> None:
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    accepted = await client.reply()
    vid = accepted.body["upload_id"]
    data = payload(3 * CHUNK)
    await client.send(frame(FrameType.DATA, data[:65536]) * 3 + frame(FrameType.END, b"0" * 40))
    assert (await client.reply()).code == "checksum_mismatch"
    assert list(vk.scan_iter(match=f"valise:c:{vid}:*")) == []
    assert (await client.request(FrameType.STAT, {"key": prefix + "k"})).code == "not_found"


async def test_abort_discards_upload(client: WireClient, prefix: str, vk: Any) -> None:
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    vid = (await client.reply()).body["upload_id"]
    await client.send(frame(FrameType.DATA, payload(65536)) * 3)
    reply = await client.request(FrameType.ABORT, {})
    assert reply.ok and reply.body == {"aborted": True}
    assert list(vk.scan_iter(match=f"valise:c:{vid}:*")) == []
    assert (await client.request(FrameType.STAT, {"key": prefix + "k"})).code == "not_found"


async def test_pipelined_requests_answer_in_order(client: WireClient, prefix: str) -> None:
    data = payload(2 * CHUNK + 5)
    from tests.support.wire import upload_frames

    await client.send(
        upload_frames(prefix + "a", data)
        + control(FrameType.STAT, {"key": prefix + "a"})
        + control(FrameType.PING, {"n": 1})
        + control(FrameType.GET, {"key": prefix + "a", "offset": 1, "length": 3})
        + control(FrameType.STAT, {"key": prefix + "missing"})
        + control(FrameType.PING, {"n": 2})
    )
    assert "upload_id" in (await client.reply()).body
    assert (await client.reply()).body["size"] == len(data)
    assert (await client.reply()).body["size"] == len(data)
    assert (await client.reply()).body == {"n": 1}
    assert (await client.stream()).data == data[1:4]
    assert (await client.reply()).code == "not_found"
    assert (await client.reply()).body == {"n": 2}


async def test_pipelined_small_puts_and_gets_answer_in_order(
    client: WireClient, prefix: str
) -> None:
    # Replies to pipelined requests may leave together: none is lost or reordered.
    from tests.support.wire import upload_frames

    files = {f"{prefix}{n}": payload(4096 + n, seed=n) for n in range(3)}
    pipeline = control(FrameType.STAT, {"key": prefix + "missing"})
    for key, data in files.items():
        pipeline += upload_frames(key, data) + control(FrameType.GET, {"key": key})
    await client.send(pipeline + control(FrameType.PING, {"n": 1}))
    assert (await client.reply()).code == "not_found"
    for key, data in files.items():
        assert "upload_id" in (await client.reply()).body
        stored = await client.reply()
        assert stored.body["key"] == key and stored.body["size"] == len(data)
        got = await client.stream()
        assert got.ok and got.data == data and got.end == hashlib.sha1(data).digest()
    assert (await client.reply()).body == {"n": 1}


async def test_reply_is_not_held_behind_an_incomplete_frame(client: WireClient) -> None:
    # The server has bytes of the next frame but not all of it: the reply it
    # owes must leave now, or a client that waits for it before sending the
    # rest would wait forever.
    second = control(FrameType.PING, {"n": 2})
    await client.send(control(FrameType.PING, {"n": 1}) + second[:3])
    assert (await client.reply()).body == {"n": 1}
    await client.send(second[3:])
    assert (await client.reply()).body == {"n": 2}


async def test_put_that_waits_for_the_accepted_ok(client: WireClient, prefix: str) -> None:
    data = payload(4096)
    await client.send(control(FrameType.PUT, {"key": prefix + "k", "size": len(data)}))
    assert (await client.reply()).body["offset"] == 0
    await client.send(
        frame(FrameType.DATA, data) + frame(FrameType.END, hashlib.sha1(data).digest())
    )
    assert (await client.reply()).body["size"] == len(data)
    assert (await client.get(prefix + "k")).data == data


RANGE_CASES = [
    (0, None, "whole"),
    (5, 10, "inside one chunk"),
    (CHUNK - 3, 6, "across a chunk boundary"),
    (CHUNK, CHUNK, "exactly one chunk"),
    (10, 10**9, "cut at the end"),
    (3 * CHUNK + 11, None, "offset equals size"),
    (7, 0, "empty"),
]


@pytest.mark.parametrize(("offset", "length", "why"), RANGE_CASES, ids=[c[2] for c in RANGE_CASES])
async def test_range_get(
    client: WireClient, prefix: str, offset: int, length: int | None, why: str
) -> None:
    data = payload(3 * CHUNK + 11)
    assert (await client.put(prefix + "k", data)).ok
    request: dict[str, Any] = {"offset": offset}
    if length is not None:
        request["length"] = length
    got = await client.get(prefix + "k", **request)
    want = data[offset : None if length is None else offset + length]
    assert got.ok, got.body
    assert got.data == want
    assert got.body["offset"] == offset and got.body["length"] == len(want)
    assert got.end == hashlib.sha1(want).digest()
    assert got.body["sha1"] == hashlib.sha1(data).hexdigest()


async def test_range_beyond_size_is_bad_range(client: WireClient, prefix: str) -> None:
    assert (await client.put(prefix + "k", b"abc")).ok
    got = await client.get(prefix + "k", offset=4)
    assert got.code == "bad_range" and got.body["fatal"] is False
    assert (await client.request(FrameType.PING, {})).ok


async def test_negative_offset_is_bad_request(client: WireClient, prefix: str) -> None:
    assert (await client.get(prefix + "k", offset=-1)).code == "bad_request"


@pytest.mark.parametrize("damage", ["altered", "deleted", "truncated"])
async def test_damaged_chunk_ends_get_with_error(
    client: WireClient, prefix: str, vk: Any, damage: str
) -> None:
    data = payload(4 * CHUNK)
    stored = await client.put(prefix + "k", data)
    vid = vk.hget(keys.NamespaceKeys("").meta(prefix + "k"), "vid").decode()
    victim = keys.chunk_key(vid, 2)
    if damage == "altered":
        vk.setrange(victim, 100, b"X")
    elif damage == "deleted":
        vk.delete(victim)
    else:
        vk.set(victim, vk.getrange(victim, 0, 99), keepttl=True)
    got = await client.get(prefix + "k")
    assert stored.ok
    assert got.code == "corrupt"
    assert got.end is None, "a damaged file must never end with END"
    assert got.body["fatal"] is False
    # Bytes before the damage were streamed, never anything of the damaged chunk.
    assert got.data == data[: 2 * CHUNK]
    assert (await client.request(FrameType.PING, {})).ok


async def test_overwrite_while_reading_keeps_old_version(server: Running, prefix: str) -> None:
    old, new = payload(6 * CHUNK, seed=1), payload(6 * CHUNK, seed=2)
    writer = await server.client()
    reader = await server.client()
    assert (await writer.put(prefix + "k", old)).ok
    await reader.send(control(FrameType.GET, {"key": prefix + "k"}))
    head = await reader.reply()
    assert head.ok
    # Replace and then delete the key while the first GET is still streaming.
    assert (await writer.put(prefix + "k", new)).ok
    assert (await writer.request(FrameType.DELETE, {"key": prefix + "k"})).body == {"deleted": True}
    data = bytearray()
    while (got := await reader.frame()) is not None and got.type is FrameType.DATA:
        data += got.payload
    assert got is not None and got.type is FrameType.END
    assert bytes(data) == old
    await writer.close()
    await reader.close()


async def test_two_uploads_to_one_key_leave_one_whole_file(server: Running, prefix: str) -> None:
    from tests.support.wire import upload_frames

    a, b = payload(5 * CHUNK, seed=3), payload(4 * CHUNK, seed=4)
    one, two = await server.client(), await server.client()
    # Interleave the two uploads frame by frame.
    fa, fb = upload_frames(prefix + "k", a), upload_frames(prefix + "k", b)
    await one.send(fa[: len(fa) // 2])
    await two.send(fb[: len(fb) // 2])
    await one.send(fa[len(fa) // 2 :])
    await two.send(fb[len(fb) // 2 :])
    for c in (one, two):
        assert (await c.reply()).ok
        assert (await c.reply()).ok
    got = await one.get(prefix + "k")
    assert got.data in (a, b)
    assert got.end == hashlib.sha1(got.data).digest()
    await one.close()
    await two.close()


async def test_urandom_file_round_trip_with_default_frames(client: WireClient, prefix: str) -> None:
    data = os.urandom(5 * CHUNK + 99)
    assert (await client.put(prefix + "r", data, frame_size=1000)).ok
    assert (await client.get(prefix + "r")).data == data


async def test_commit_refuses_when_a_staged_chunk_expired(
    client: WireClient, prefix: str, vk: Any
) -> None:
    old = payload(CHUNK, seed=11)
    assert (await client.put(prefix + "k", old)).ok
    new = payload(3 * CHUNK, seed=12)
    await client.send(control(FrameType.PUT, {"key": prefix + "k"}))
    vid = (await client.reply()).body["upload_id"]
    await client.send(
        frame(FrameType.DATA, new[:CHUNK]) + frame(FrameType.DATA, new[CHUNK : 2 * CHUNK])
    )
    # Wait for chunk 0 to be staged, then let it "expire" as it would after a stall.
    for _ in range(200):
        if vk.exists(keys.chunk_key(vid, 0)):
            break
        await asyncio.sleep(0.01)
    vk.delete(keys.chunk_key(vid, 0))
    await client.send(frame(FrameType.DATA, new[2 * CHUNK :]))
    await client.send(frame(FrameType.END, hashlib.sha1(new).digest()))
    reply = await client.reply()
    assert reply.code == "unavailable"
    assert reply.body["fatal"] is False
    # Never a file with a hole: the old version is still the one served, whole.
    got = await client.get(prefix + "k")
    assert got.data == old
    assert list(vk.scan_iter(match=f"valise:*{vid}*")) == []
