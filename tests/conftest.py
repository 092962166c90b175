"""Options and settings of the whole suite: --valkey-cluster, --loop, hypothesis.

Unit tests (tests/unit) need nothing more; the Valkey and server fixtures of
the integration tests are in tests/integration/conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop
from hypothesis import HealthCheck, settings

from service.config import LOOPS
from tests.support import harness

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
    harness.CLUSTER = bool(config.getoption("--valkey-cluster"))
    harness.LOOP = config.getoption("--loop")
    config.addinivalue_line("markers", "config(**overrides): server settings for this test")
    config.addinivalue_line(
        "markers", "single_node: needs one valkey-server it can kill or reconfigure"
    )


#: Integration files about the client alone (versions of Python, the zipapp, the
#: agent's completeness rules, batches, messages): what Valkey is behind the
#: server changes nothing for them, so the cluster half of make test skips them.
CLIENT_SIDE = frozenset(
    {
        "test_agent_complete.py",
        "test_agent_nosignals.py",
        "test_batch.py",
        "test_cli.py",
        "test_cli_messages.py",
        "test_client_resume.py",
        "test_client_pythons.py",
        "test_client_sinks.py",
        "test_client_pyz.py",
        "test_loadtest.py",
        "test_watch.py",
    }
)


#: Integration files about the connection layer (slow and hostile clients, one
#: client's framing against another's, PROXY headers, log lines): they run on
#: one valkey-server only, to keep make test under ten minutes on two cores.
#: Those where uvloop's transports behave differently (test_sockets: sockets
#: that never read; test_tls) still run in both halves.
DOOR_SIDE = frozenset(
    {
        "test_abuse.py",
        "test_access.py",
        "test_fairness.py",
        "test_http_abuse.py",
        "test_logs.py",
        "test_proxy.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not harness.CLUSTER:
        return
    skip = pytest.mark.skip(reason="needs a single valkey-server (faults, DEBUG, CONFIG SET)")
    client_side = pytest.mark.skip(reason="client-side only: run once, on one valkey-server")
    door_side = pytest.mark.skip(reason="connection layer only: run once, on one valkey-server")
    for item in items:
        if "single_node" in item.keywords:
            item.add_marker(skip)
        elif item.path.name in CLIENT_SIDE:
            item.add_marker(client_side)
        elif item.path.name in DOOR_SIDE:
            item.add_marker(door_side)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """pytest-asyncio's hook: every test's loop, and so the in-process servers'."""
    if harness.LOOP == "uvloop":
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
