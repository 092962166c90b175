"""``python -m client watch``: the scanner agent against a real server process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import Client, NotFound
from storage.embedded import EmbeddedValkey
from tests.support.harness import ROOT, reap, start_process
from tests.support.ports import free_port

DEADLINE = 20.0


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The agents' per-user state folder ($XDG_STATE_HOME/valise): the test's own."""
    home = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home / "valise"


def state_of(state_home: Path) -> dict[str, Any]:
    """The one state file an agent wrote in ``state_home``."""
    [path] = state_home.glob("watch-*.json")
    value: dict[str, Any] = json.loads(path.read_text())
    return value


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    proc, port = start_process(valkey_server.url, "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


def watch_args(port: int, directory: Path, prefix: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "client",
        "watch",
        str(directory),
        "--server",
        f"127.0.0.1:{port}",
        "--prefix",
        prefix,
        *extra,
    ]


def run_once(port: int, directory: Path, prefix: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        [*watch_args(port, directory, prefix, "--once", *extra)],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.stdout == b""
    return result.returncode, result.stderr.decode()


class Agent:
    """A running ``watch`` process whose log goes to a file we can poll."""

    def __init__(self, port: int, directory: Path, prefix: str, log: Path, *extra: str) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            watch_args(port, directory, prefix, *extra),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=ROOT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.kill()


def wait_for(what: str, predicate: Callable[[], bool], deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stored(port: int, key: str) -> bytes | None:
    """The bytes stored at ``key`` (verified by the client), or None."""
    with Client("127.0.0.1", port, retries=0, timeout=10) as client:
        sink = _Buffer()
        try:
            # The info of the version the GET read: a separate STAT could
            # describe the version before, when the agent replaces the file.
            info = client.get(key, sink)
        except NotFound:
            return None
        assert hashlib.sha1(sink.data).hexdigest() == info["sha1"]
        return bytes(sink.data)


class _Buffer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def sent_lines(log: str, rel: str) -> list[str]:
    return [line for line in log.splitlines() if f"valise watch: sent {rel} -> " in line]


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime_ns of every scanner file (the state file excluded)."""
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(".valise-sent.json")
    }


def test_once_sends_new_files_then_nothing_then_the_changed_one(
    port: int, prefix: str, tmp_path: Path, state_home: Path
) -> None:
    scans = tmp_path / "scans"
    (scans / "p1" / "series2").mkdir(parents=True)
    (scans / ".cache").mkdir()
    files = {
        "a.dcm": os.urandom(200_000),
        "p1/series2/img 01.nii": os.urandom(3 * 1024 * 1024 + 7),
        "empty.raw": b"",
    }
    for rel, data in files.items():
        (scans / rel).write_bytes(data)
    (scans / ".partial.tmp").write_bytes(b"hidden")
    (scans / ".cache" / "x").write_bytes(b"hidden")
    before = snapshot(scans)

    rc, log = run_once(port, scans, prefix, "--settle", "0")
    assert rc == 0, log
    for rel, data in files.items():
        assert len(sent_lines(log, rel)) == 1, log
        assert stored(port, prefix + rel) == data
    assert stored(port, prefix + ".partial.tmp") is None
    assert stored(port, prefix + ".cache/x") is None
    assert b"hidden" not in log.encode() and files["a.dcm"][:16].hex() not in log

    # The state is the user's, not the scanner's: nothing was written into DIR.
    assert snapshot(scans) == before and not (scans / ".valise-sent.json").exists()
    state = state_of(state_home)
    record = state["files"]["p1/series2/img 01.nii"]
    assert record["key"] == prefix + "p1/series2/img 01.nii"
    assert record["sha1"] == hashlib.sha1(files["p1/series2/img 01.nii"]).hexdigest()
    assert record["size"] == len(files["p1/series2/img 01.nii"])

    rc, log = run_once(port, scans, prefix, "--settle", "0")
    assert rc == 0, log
    assert "valise watch: sent " not in log

    with open(scans / "a.dcm", "ab") as fh:
        fh.write(b"appended")
    files["a.dcm"] += b"appended"
    before["a.dcm"] = ((scans / "a.dcm").read_bytes(), (scans / "a.dcm").stat().st_mtime_ns)
    rc, log = run_once(port, scans, prefix, "--settle", "0")
    assert rc == 0, log
    assert [rel for rel in files if sent_lines(log, rel)] == ["a.dcm"]
    assert stored(port, prefix + "a.dcm") == files["a.dcm"]
    assert snapshot(scans) == before


def test_once_waits_for_young_files_and_says_why(port: int, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "fresh").write_bytes(b"still being written")
    rc, log = run_once(port, tmp_path, prefix, "--settle", "3600")
    assert rc == 0, log
    assert "valise watch: sent " not in log
    assert "pass done: 0 sent; 1 waiting (1 younger than --settle 3600 s)" in log
    assert stored(port, prefix + "fresh") is None


def test_state_of_an_older_version_in_dir_is_taken_over(
    port: int, prefix: str, tmp_path: Path, state_home: Path
) -> None:
    (tmp_path / "old.dcm").write_bytes(b"sent by an older agent")
    st = (tmp_path / "old.dcm").stat()
    record = {
        "path": "old.dcm",
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha1": hashlib.sha1(b"sent by an older agent").hexdigest(),
        "key": prefix + "old.dcm",
        "sent_at": 1.0,
    }
    legacy = {"version": 1, "files": {"old.dcm": record}}
    (tmp_path / ".valise-sent.json").write_text(json.dumps(legacy))
    (tmp_path / "new.dcm").write_bytes(b"new")
    rc, log = run_once(port, tmp_path, prefix, "--settle", "0")
    assert rc == 0, log
    assert "took over 1 records" in log
    assert sent_lines(log, "old.dcm") == [] and len(sent_lines(log, "new.dcm")) == 1
    assert set(state_of(state_home)["files"]) == {"old.dcm", "new.dcm"}
    assert json.loads((tmp_path / ".valise-sent.json").read_text()) == legacy  # only read


def test_once_exits_5_when_the_server_is_down(
    prefix: str, tmp_path: Path, state_home: Path
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    rc, log = run_once(free_port(), tmp_path, prefix, "--settle", "0", "--retries", "0")
    assert rc == 5, log
    assert list(state_home.glob("*.json")) == []


def test_custom_state_file_and_usage_errors(port: int, prefix: str, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "f").write_bytes(b"one")
    state = scans / "sent-state.json"  # inside DIR, not a dotfile: still never uploaded
    rc, log = run_once(port, scans, prefix, "--settle", "0", "--state", str(state))
    assert rc == 0, log
    assert json.loads(state.read_text())["files"]["f"]["size"] == 3
    assert stored(port, prefix + "sent-state.json") is None
    assert not (scans / ".valise-sent.json").exists()
    assert run_once(port, tmp_path / "missing", prefix)[0] == 2
    assert run_once(port, scans, prefix, "--settle", "-1")[0] == 2


def test_slow_file_is_sent_once_after_it_settles_and_restart_does_not_resend(
    port: int, prefix: str, tmp_path: Path, agents: list[Agent]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    # A settle time far above the 0.4 s between writes: a loaded CI machine
    # must not make a pause look like a settled file.
    timing = ("--settle", "3", "--interval", "0.1")
    agent = Agent(port, scans, prefix, tmp_path / "log1", *timing)
    agents.append(agent)
    wait_for("the agent to start", lambda: "watching" in agent.log())

    pieces = [os.urandom(100_000) for _ in range(6)]
    slow = scans / "slow.nii"
    for piece in pieces:  # 6 appends, 0.4 s apart: 2.4 s of writing
        with open(slow, "ab") as fh:
            fh.write(piece)
        assert stored(port, prefix + "slow.nii") is None, "sent while still changing"
        time.sleep(0.4)
    whole = b"".join(pieces)
    wait_for("the settled upload", lambda: stored(port, prefix + "slow.nii") is not None)
    assert stored(port, prefix + "slow.nii") == whole

    # A marker proves that later passes ran: they must not send slow.nii again.
    (scans / "marker").write_bytes(b"m1")
    wait_for("the marker", lambda: stored(port, prefix + "marker") == b"m1")
    assert agent.stop() == 0
    log = agent.log()
    assert len(sent_lines(log, "slow.nii")) == 1, log
    assert f"{len(whole)} bytes  sha1 {hashlib.sha1(whole).hexdigest()}" in log
    assert "SIGTERM: stopped" in log

    # Restart: nothing already sent goes again; a changed file does. Nothing
    # is written slowly now: a short settle, and slow.nii (long settled) would
    # go again at once were the state forgotten.
    before = snapshot(scans)
    agent = Agent(port, scans, prefix, tmp_path / "log2", "--settle", "0.5", "--interval", "0.1")
    agents.append(agent)
    (scans / "marker").write_bytes(b"m2")
    wait_for("the changed marker", lambda: stored(port, prefix + "marker") == b"m2")
    assert agent.stop() == 0
    log = agent.log()
    assert sent_lines(log, "slow.nii") == [], log
    assert len(sent_lines(log, "marker")) == 1, log
    after = snapshot(scans)
    assert after["slow.nii"] == before["slow.nii"]
    assert after["marker"][0] == b"m2"


def test_agent_keeps_retrying_until_a_server_comes_up(
    valkey_server: EmbeddedValkey, prefix: str, tmp_path: Path, agents: list[Agent]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    data = os.urandom(500_000)
    (scans / "waiting.nii").write_bytes(data)
    before = snapshot(scans)
    late = free_port()
    agent = Agent(
        late,
        scans,
        prefix,
        tmp_path / "log",
        *("--settle", "0.2", "--interval", "0.1", "--max-backoff", "0.5", "--retries", "0"),
    )
    agents.append(agent)
    wait_for("a failed attempt", lambda: "cannot send waiting.nii" in agent.log())
    wait_for("backoff", lambda: "server unavailable; retrying" in agent.log())
    assert agent.proc.poll() is None, "the agent must not exit while the server is down"

    proc, port = start_process(valkey_server.url, "--port", str(late), "--shutdown-grace", "1")
    try:
        assert port == late
        wait_for("the upload", lambda: stored(port, prefix + "waiting.nii") is not None)
        assert stored(port, prefix + "waiting.nii") == data
        assert agent.stop() == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        reap(proc)
    log = agent.log()
    assert len(sent_lines(log, "waiting.nii")) == 1, log
    assert snapshot(scans) == before
