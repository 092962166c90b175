"""Shared fixtures: one real valkey-server per session, a real server per test."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop
import valkey
from hypothesis import HealthCheck, settings

from server import Server, storage_config
from service.auth import Tokens
from service.config import LOOPS, Config, parse_args
from storage.embedded import EmbeddedValkey
from storage.store import Store
from tests.cluster import LocalCluster
from tests.wire import WireClient

ROOT = Path(__file__).resolve().parent.parent

# Deterministic property tests: fixed seeds, no timing health checks or
# deadlines (a loaded 2-core CI machine must not turn them red), no database.
settings.register_profile(
    "valise",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("valise")

#: Small chunks keep multi-chunk cases fast; the logic does not depend on size.
CHUNK = 64 * 1024


#: Set by ``--valkey-cluster`` (`make test-cluster`): the session's Valkey is a
#: local 3-primary cluster, and every server the tests start uses it.
CLUSTER = False

#: Set by ``--loop``: the event loop of the tests, and of every server they start.
LOOP = "asyncio"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--valkey-cluster",
        action="store_true",
        help="run against a local 3-primary Valkey Cluster instead of one valkey-server",
    )
    parser.addoption(
        "--loop", choices=LOOPS, default="asyncio", help="event loop for tests and servers"
    )


def pytest_configure(config: pytest.Config) -> None:
    global CLUSTER, LOOP
    CLUSTER = bool(config.getoption("--valkey-cluster"))
    LOOP = config.getoption("--loop")
    config.addinivalue_line("markers", "config(**overrides): server settings for this test")
    config.addinivalue_line(
        "markers", "single_node: needs one valkey-server it can kill or reconfigure"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not CLUSTER:
        return
    skip = pytest.mark.skip(reason="needs a single valkey-server (faults, DEBUG, CONFIG SET)")
    for item in items:
        if "single_node" in item.keywords:
            item.add_marker(skip)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio's hook: every test's loop, and so the in-process servers'."""
    if LOOP == "uvloop":
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[EmbeddedValkey | LocalCluster]:
    if CLUSTER:
        with LocalCluster(maxmemory=1024**3) as cluster:
            yield cluster
        return
    with EmbeddedValkey(maxmemory=2 * 1024**3) as server:
        yield server


def sync_valkey(url: str) -> Any:
    """A plain synchronous client (typed Any: valkey-py's stubs mix sync and async)."""
    if CLUSTER:
        return valkey.ValkeyCluster.from_url(url)  # type: ignore[no-untyped-call]
    return valkey.Valkey.from_url(url)


@pytest.fixture
def vk(valkey_server: EmbeddedValkey) -> Iterator[Any]:
    """A plain synchronous client, to look at (and damage) what Valkey holds."""
    client = sync_valkey(valkey_server.url)
    yield client
    client.close()


@pytest.fixture
def prefix() -> str:
    """A unique key prefix per test, instead of FLUSHDB."""
    return f"t-{uuid.uuid4().hex[:10]}/"


def make_config(**overrides: Any) -> Config:
    base = parse_args(
        ["--port", "0", "--chunk-size", str(CHUNK), "--max-frame", "64KiB", "--shutdown-grace", "1"]
    )
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
    store = Store(storage_config(config, url))
    await store.check_server()
    server = Server(config, store, tokens)
    host, port = await server.start()
    return Running(server, host, port)


async def stop_server(running: Running) -> None:
    await running.server.shutdown()
    await running.store.close()


@pytest_asyncio.fixture
async def server(
    valkey_server: EmbeddedValkey, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    marker = request.node.get_closest_marker("config")
    overrides: dict[str, Any] = dict(marker.kwargs) if marker else {}
    running = await start_server(valkey_server.url, make_config(**overrides))
    yield running
    await stop_server(running)


@pytest_asyncio.fixture
async def client(server: Running) -> AsyncIterator[WireClient]:
    wire = await server.client()
    yield wire
    await wire.close()


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
    assert line.startswith("valise listening on "), f"server did not start: {line!r}"
    # "valise listening on HOST:PORT", maybe followed by more words.
    return proc, int(line.split()[3].rsplit(":", 1)[1])


def reap(proc: subprocess.Popen[str], timeout: float = 15) -> int:
    """Wait for the process and close its pipes; its exit code."""
    proc.communicate(timeout=timeout)
    return proc.returncode
