"""Revision 2 on the wire: versions (6.2), create-only uploads (6.4), HELLO's features."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from protocol.frames import FrameType
from tests.support.harness import Running
from tests.support.wire import Reply, WireClient, control, upload_frames

pytestmark = pytest.mark.asyncio


async def test_every_upload_is_a_new_version_and_get_pins_one(
    client: WireClient, prefix: str
) -> None:
    key = prefix + "scan"
    first = (await client.put(key, b"first version")).body
    second = (await client.put(key, b"second version")).body
    assert first["version"] != second["version"]
    assert (await client.request(FrameType.STAT, {"key": key})).body["version"] == second["version"]
    pinned = await client.get(key, version=second["version"])
    assert pinned.data == b"second version"
    assert pinned.body["version"] == second["version"]
    # A range of the current version, pinned: how a client resumes a download.
    part = await client.get(key, offset=7, version=second["version"])
    assert part.data == b"version"
    # The replaced version is never streamed, nor spliced with the new one.
    gone = await client.get(key, offset=6, version=first["version"])
    assert gone.code == "not_found"
    assert gone.body["fatal"] is False
    assert gone.data == b""
    # Replaced by a shorter file: the version is gone, whatever the offset says.
    await client.put(key, b"3rd")
    past = await client.get(key, offset=10, version=second["version"])
    assert (past.code, past.body["message"]) == (
        "not_found",
        "that version of the file is no longer stored",
    )


async def test_hello_lists_the_features_offered(client: WireClient) -> None:
    hello = await client.request(FrameType.HELLO, {"version": 1})
    assert hello.body["features"] == ["if_absent", "resume", "subscribe", "versions"]


async def test_a_request_of_a_feature_not_offered_is_bad_frame(server: Running) -> None:
    # A server that offers versions only: SUBSCRIBE is an unknown frame type there.
    server.server.state.features = frozenset({"versions"})
    client = await server.client()
    assert (await client.request(FrameType.HELLO, {"version": 1})).body["features"] == ["versions"]
    await client.send(control(FrameType.SUBSCRIBE, {}))
    reply = await client.reply()
    assert reply.code == "bad_frame"
    assert reply.body["fatal"] is True
    await client.close()


async def test_create_only_upload_never_replaces_a_file(client: WireClient, prefix: str) -> None:
    key = prefix + "scan"
    assert (await client.put(key, b"original", if_absent=True)).ok
    refused = await client.put(key, b"impostor" * 20_000, if_absent=True)  # several chunks
    assert refused.code == "exists"
    assert refused.body["fatal"] is False  # at END: the connection goes on
    assert (await client.get(key)).data == b"original"
    assert (await client.put(key, b"replaced")).ok  # a plain PUT still may
    assert (await client.get(key)).data == b"replaced"


async def test_of_racing_create_only_uploads_exactly_one_wins(
    server: Running, prefix: str, vk: Any
) -> None:
    key = prefix + "race"
    clients = [await server.client() for _ in range(8)]
    bodies = [f"upload {n} ".encode() * 5000 for n in range(8)]  # small: the one-trip commit

    async def create(client: WireClient, body: bytes) -> tuple[str, Reply]:
        await client.send(upload_frames(key, body, if_absent=True))
        accepted = await client.reply()
        assert accepted.ok
        return accepted.body["upload_id"], await client.reply()

    results = await asyncio.gather(*(create(c, b) for c, b in zip(clients, bodies, strict=True)))
    winners = [n for n, (_, reply) in enumerate(results) if reply.ok]
    assert len(winners) == 1
    assert {reply.code for _, reply in results if not reply.ok} == {"exists"}
    assert (await clients[0].get(key)).data == bodies[winners[0]]
    for c in clients:
        await c.close()
    # The losers' staged chunks are gone at once, not left to their staging TTL.
    for upload_id, reply in results:
        if not reply.ok:
            assert list(vk.scan_iter(match=f"valise:c:{upload_id}:*")) == []
