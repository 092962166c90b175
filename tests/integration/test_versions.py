"""Revision 2 on the wire: versions (section 6.2), and features HELLO announces."""

from __future__ import annotations

import pytest

from protocol.frames import FrameType
from tests.support.harness import Running
from tests.support.wire import WireClient, control

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


async def test_hello_lists_the_features_offered(client: WireClient) -> None:
    hello = await client.request(FrameType.HELLO, {"version": 1})
    assert hello.body["features"] == ["subscribe", "versions"]


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
