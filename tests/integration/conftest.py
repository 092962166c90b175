"""Integration fixtures: one real valkey-server (or cluster) per session, a real server per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from storage.embedded import EmbeddedValkey
from tests.support import harness
from tests.support.cluster import LocalCluster
from tests.support.harness import Running, make_config, start_server, stop_server, sync_valkey
from tests.support.wire import WireClient


def fresh_valkey() -> Iterator[EmbeddedValkey | LocalCluster]:
    """A valkey-server (or a cluster, with --valkey-cluster) started for the caller."""
    if harness.CLUSTER:
        with LocalCluster(maxmemory=1024**3) as cluster:
            yield cluster
        return
    with EmbeddedValkey(maxmemory=2 * 1024**3) as server:
        yield server


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[EmbeddedValkey | LocalCluster]:
    yield from fresh_valkey()


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
