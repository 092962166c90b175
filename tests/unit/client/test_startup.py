"""What `valise --help` imports: only the parser, not the client or the agents.

A start-up of the CLI is a real share of a small transfer and of every
file a scanner agent sends; asyncio (with ssl) and the watch agent are most
of it, and --help needs neither. Checked on the module set Python reports
(-X importtime), never on a time.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.harness import ROOT


def _imported(*args: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage: valise" in run.stdout
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
