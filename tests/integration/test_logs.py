"""--log-format json: every line an object a log shipper can parse, with no key names."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from client.loadtest.spawn import start_address
from protocol.frames import FrameType
from tests.support import harness
from tests.support.harness import ROOT
from tests.support.wire import WireClient

pytestmark = pytest.mark.asyncio

KEY = "Patient Jane Roe/t1.nii"


async def test_json_lines_from_every_logger(valkey_server: Any) -> None:
    proc = subprocess.Popen(  # noqa: ASYNC220 - one process, read by communicate()
        [
            sys.executable,
            "server.py",
            "--port",
            "0",
            "--valkey-url",
            valkey_server.url,
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--loop",
            harness.LOOP,
            *(["--valkey-cluster"] if harness.CLUSTER else []),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = start_address(proc.stdout.readline())
        assert address is not None
        client = await WireClient.connect(*address)
        try:
            assert (await client.put(KEY, b"scan bytes")).ok
            stat = await client.request(FrameType.STAT, {"key": KEY + ".missing"})
            assert stat.code == "not_found"
        finally:
            await client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.splitlines()]  # every line is one object
    for line in lines:
        assert {"time", "level", "logger"} <= line.keys()
        assert datetime.fromisoformat(line["time"]).utcoffset() is not None  # RFC 3339
    access = [line for line in lines if line["logger"] == "valise.access"]
    assert [(a["op"], a["outcome"]) for a in access] == [("put", "ok"), ("stat", "not_found")]
    assert all(a["key"].startswith("h:") for a in access)
    assert {"valise"} <= {line["logger"] for line in lines}  # "shutting down", at least
    assert "Jane Roe" not in err
