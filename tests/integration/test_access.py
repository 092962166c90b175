"""One access-log record per request; no file bytes and no key names in logs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from protocol.frames import FrameType
from tests.support.harness import Running
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio

SECRET_BYTES = b"PATIENT-PIXELS-" * 1000
KEY = "patients/Jane Roe 1961-02-03/t1.nii"


def access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "valise.access"]


async def exercise(client: WireClient, prefix: str) -> None:
    assert (await client.put(prefix + KEY, SECRET_BYTES)).ok
    assert (await client.get(prefix + KEY)).data == SECRET_BYTES
    assert (await client.request(FrameType.STAT, {"key": prefix + KEY})).ok
    assert (await client.request(FrameType.DELETE, {"key": prefix + KEY})).ok
    assert (await client.request(FrameType.STAT, {"key": prefix + KEY})).code == "not_found"


async def test_one_record_per_request_without_phi(
    client: WireClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise")
    await exercise(client, prefix)
    await client.close()
    entries = access(caplog)
    assert [(e["op"], e["outcome"]) for e in entries] == [
        ("put", "ok"),
        ("get", "ok"),
        ("stat", "ok"),
        ("delete", "ok"),
        ("stat", "not_found"),
    ]
    assert entries[0]["bytes"] == len(SECRET_BYTES)
    assert entries[1]["bytes"] == len(SECRET_BYTES)
    keys = {e["key"] for e in entries}
    assert len(keys) == 1, "the same key hashes the same within a run"
    assert keys.pop().startswith("h:")
    for e in entries:
        assert {"time", "peer", "namespace", "op", "key", "bytes", "ms", "outcome"} <= set(e)
    everything = caplog.text
    assert "Jane Roe" not in everything
    assert "PATIENT-PIXELS" not in everything


@pytest.mark.config(log_keys=True)
async def test_log_keys_shows_key_names(
    server: Running, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise")
    client = await server.client()
    assert (await client.put(prefix + KEY, b"x")).ok
    await client.close()
    assert access(caplog)[0]["key"] == prefix + KEY


async def test_interrupted_upload_is_logged_once(
    server: Running, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise")
    client = await server.client()
    await client.send(control(FrameType.PUT, {"key": prefix + KEY}))
    assert (await client.reply()).ok
    await client.send(frame(FrameType.DATA, SECRET_BYTES[:1000]))
    assert (await client.request(FrameType.PING, {})).code == "bad_frame"
    await client.close()
    entries = [e for e in access(caplog) if e["op"] == "put"]
    assert len(entries) == 1
    assert entries[0]["outcome"] == "bad_frame"
    assert entries[0]["bytes"] == 1000
