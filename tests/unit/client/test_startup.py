"""What `valise --help` and `valise ping` import: not asyncio, ssl or the agents.

A start-up of the CLI is a real share of a small transfer and of every
file a scanner agent sends; asyncio (with ssl) and the watch agent are most
of it, and --help needs neither; ping runs on a blocking socket (issue 21).
Checked on the module set Python reports (-X importtime), never on a time.
tests/integration/test_cli.py checks a ping that reaches a server.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.harness import ROOT


def _imported(*args: str, code: int = 0) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == code, run.stderr[-2000:]
    assert "usage: valise" in run.stdout + run.stderr
    # "import time: self | cumulative | [indent]module" per imported module.
    return {
        line.rsplit("|", 1)[1].strip()
        for line in run.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_help_imports_neither_asyncio_nor_the_agents() -> None:
    modules = _imported("--help")
    assert "client.cli" in modules  # the parse worked: the check sees real imports
    assert "asyncio" not in modules
    assert "ssl" not in modules
    for agent in ("client.watch", "client.events", "client.follow", "client.aio"):
        assert agent not in modules, agent


def test_a_subcommands_help_imports_no_asyncio_either() -> None:
    modules = _imported("watch", "--help")
    assert "asyncio" not in modules
    assert "client.watch" not in modules


def test_ping_imports_neither_asyncio_nor_ssl() -> None:
    # A bad address is refused after the ping module is imported, before any socket.
    modules = _imported("ping", "--server", "valise://nowhere", code=2)
    # The command's module came in (importlib's own imports are not reported, its
    # module's are): what it imports is in the set.
    assert "client.greeting" in modules
    for heavy in ("asyncio", "ssl", "client.aio", "client.connection", "client.batch"):
        assert heavy not in modules, heavy
    # dataclasses pulls in inspect: a third of the CLI's own imports, for nothing ping needs.
    for costly in ("dataclasses", "inspect", "hashlib", "client.watchstate", "client.nctools"):
        assert costly not in modules, costly
