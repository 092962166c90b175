"""The server under --loop uvloop on one Valkey node, over its unix socket.

The cluster half of `make test` runs under uvloop, but a cluster's chunk reads
go through valkey-py; on one node they are received straight into buffers
(storage/bulk.py), where libuv asks for a buffer again after a reply has
ended. An empty one was a fatal transport error: every chunk read broke its
connection and was retried on a new one, and a later call on the pool could
end a PUT with an internal error.
"""

from __future__ import annotations

import hashlib
import io
import random
import signal
import time
from typing import Any

import pytest
import valkey

from client.errors import ValiseError
from client.sync import Client
from storage.embedded import EmbeddedValkey
from storage.store import MEMORY_CACHE
from tests.support.harness import reap, start_process

pytestmark = pytest.mark.single_node  # a cluster's chunk reads take valkey-py's path


def connections_received(raw: valkey.Valkey) -> int:
    stats: Any = raw.info("stats")
    return int(stats["total_connections_received"])


def test_files_of_one_and_several_chunks_come_back_whole_under_uvloop(
    valkey_server: EmbeddedValkey,
) -> None:
    assert valkey_server.url.startswith("unix://")
    proc, port = start_process(valkey_server.url, "--loop", "uvloop")
    try:
        rng = random.Random(21)
        files = {"uv/small": rng.randbytes(5000), "uv/big": rng.randbytes(20 * 2**20 + 123)}
        with Client("127.0.0.1", port) as client:
            for key, data in files.items():
                client.put(key, io.BytesIO(data))
            for key, data in files.items():
                out = io.BytesIO()
                client.get(key, out)
                assert hashlib.sha1(out.getvalue()).digest() == hashlib.sha1(data).digest()
            # Read again on the warm pool: a chunk read that broke its connection
            # (and was retried on a new one) shows as a connection Valkey received.
            with valkey.Valkey.from_url(valkey_server.url) as raw:  # one connection of ours
                before = connections_received(raw)
                out = io.BytesIO()
                client.get("uv/big", out)
                assert out.getvalue() == files["uv/big"]
                assert connections_received(raw) == before
            with pytest.raises(ValiseError) as missing:
                client.get("uv/none", io.BytesIO())
            assert missing.value.code == "not_found"
            # The chunk reads' connections go back to the pool: once the memory
            # figures are stale, the next PUT asks Valkey on one of them.
            time.sleep(MEMORY_CACHE + 0.2)
            client.put("uv/after", io.BytesIO(files["uv/small"]))
            out = io.BytesIO()
            client.get("uv/after", out)
            assert out.getvalue() == files["uv/small"]
    finally:
        proc.send_signal(signal.SIGINT)
        assert reap(proc) == 0
