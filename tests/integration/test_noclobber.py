"""No silent clobber: ``put --no-clobber`` and ``if_absent=True`` against a real server.

A create-only upload (docs/protocol.md section 6.4) is sent only to a server
whose HELLO lists the ``if_absent`` feature: a server without it ignores the
field and would replace the file, so the client refuses there (unit-tested
in tests/unit/client with a scripted connection; this server offers the
feature, so here the real race runs: two uploads of one key, one wins).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client, Exists
from storage.embedded import EmbeddedValkey
from tests.integration.test_cli import cli
from tests.integration.test_watch import run_once, stored
from tests.support.harness import reap, start_process


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    proc, port = start_process(valkey_server.url, "--chunk-size", "64KiB", "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


@pytest.fixture(scope="module")
def offered(port: int) -> bool:
    """Whether this server's HELLO lists ``if_absent``."""
    with Client("127.0.0.1", port) as client:
        features = client.hello().get("features") or []
    return "if_absent" in features


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


def needs_if_absent(offered: bool) -> None:
    if not offered:
        pytest.skip("server lacks if_absent")


def test_no_clobber_keeps_the_stored_file_and_exits_6(
    port: int, offered: bool, prefix: str, tmp_path: Path
) -> None:
    needs_if_absent(offered)
    key = prefix + "t1.nii"
    (tmp_path / "a").write_bytes(b"the first scan")
    (tmp_path / "b").write_bytes(b"another scan")
    assert cli(port, "put", str(tmp_path / "a"), key, "--no-clobber").returncode == 0
    again = cli(port, "put", str(tmp_path / "b"), key, "--no-clobber", "--json")
    assert again.returncode == 6, again.stderr
    error = json.loads(again.stderr)["error"]
    assert (error["code"], error["key"], error["exit_code"]) == ("exists", key, 6)
    assert stored(port, key) == b"the first scan"


def test_racing_create_only_uploads_exactly_one_wins(port: int, offered: bool, prefix: str) -> None:
    needs_if_absent(offered)
    key = prefix + "race.dcm"
    scans = [os.urandom(300_000) for _ in range(6)]
    outcomes: dict[int, str] = {}
    start = threading.Barrier(len(scans))

    def upload(i: int) -> None:
        with Client("127.0.0.1", port, retries=0) as client:
            client.ping()
            start.wait()
            try:
                client.put(key, scans[i], if_absent=True)
                outcomes[i] = "won"
            except Exists:
                outcomes[i] = "exists"

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(scans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == len(scans) and len(winners) == 1, outcomes
    assert stored(port, key) == scans[winners[0]]


def test_watch_never_replaces_a_key_it_did_not_send(
    port: int, offered: bool, prefix: str, tmp_path: Path
) -> None:
    needs_if_absent(offered)
    with Client("127.0.0.1", port) as client:
        client.put(prefix + "other.dcm", b"another agent's scan")
        client.put(prefix + "same.dcm", b"same bytes")
    (tmp_path / "other.dcm").write_bytes(b"this agent's scan")
    (tmp_path / "same.dcm").write_bytes(b"same bytes")
    rc, log = run_once(port, tmp_path, prefix, "--settle", "0")
    assert rc == 1, log
    assert f"server already holds another file as {prefix + 'other.dcm'!r}" in log
    assert "same.dcm is already on the server with the same sha1; recorded" in log
    assert stored(port, prefix + "other.dcm") == b"another agent's scan"
