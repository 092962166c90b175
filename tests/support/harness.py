"""Starting and stopping real servers for the tests and tools: one place.

``CLUSTER`` and ``LOOP`` are set by tests/conftest.py from pytest's options
(``--valkey-cluster``, ``--loop``); every server started here follows them.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import valkey

from client.loadtest.spawn import start_address
from server import Server
from service.auth import Tokens
from service.config import Config
from storage import Store
from tests.support.wire import WireClient

ROOT = Path(__file__).resolve().parent.parent.parent

#: Small chunks keep multi-chunk cases fast; the logic does not depend on size.
CHUNK = 64 * 1024

#: The session's Valkey is a local 3-primary cluster (``make test-cluster``).
CLUSTER = False

#: The event loop of the tests, and of every server they start.
LOOP = "asyncio"


def sync_valkey(url: str) -> Any:
    """A plain synchronous client (typed Any: valkey-py's stubs mix sync and async)."""
    if CLUSTER:
        return valkey.ValkeyCluster.from_url(url)  # type: ignore[no-untyped-call]
    return valkey.Valkey.from_url(url)


def make_config(**overrides: Any) -> Config:
    """The tests' server: the defaults, small chunks and frames, a free port."""
    base = Config(port=0, chunk_size=CHUNK, max_frame=64 * 1024, shutdown_grace=1)
    return dataclasses.replace(base, **{"valkey_cluster": CLUSTER, **overrides})


class Running:
    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.config = server.config
        self.store = server.store

    async def client(self) -> WireClient:
        return await WireClient.connect(self.host, self.port)


async def start_server(url: str, config: Config, tokens: Tokens | None = None) -> Running:
    store = Store(config.storage_config(url))
    await store.check_server()
    server = Server(config, store, tokens)
    host, port = await server.start()
    return Running(server, host, port)


async def stop_server(running: Running) -> None:
    await running.server.shutdown()
    await running.store.close()


def start_process(valkey_url: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """The server as a process. Its log goes to a file, never to an unread pipe
    (a full pipe would block the server's event loop on its own log)."""
    with tempfile.TemporaryFile(mode="w+") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [
                sys.executable,
                "server.py",
                "--port",
                "0",
                "--valkey-url",
                valkey_url,
                *(["--valkey-cluster"] if CLUSTER else []),
                "--loop",
                LOOP,
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    address = start_address(line)
    assert address is not None, f"server did not start: {line!r}"
    return proc, address[1]


def reap(proc: subprocess.Popen[str], timeout: float = 15) -> int:
    """Wait for the process and close its pipes; its exit code."""
    proc.communicate(timeout=timeout)
    return proc.returncode
