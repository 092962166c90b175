"""Never a half scan: ``watch`` uploads a file only once it is complete, against a real server.

A writer that pauses longer than ``--settle`` in the middle of a file used
to get the first part published as a verified file. Here the pause is four
times the settle time and the file must not appear on the server until its
last byte is written; include/exclude globs and the pass summary are checked
the same way, as a user sees them.
"""

from __future__ import annotations

import importlib.util
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.embedded import EmbeddedValkey
from tests.integration.test_watch import Agent, run_once, sent_lines, stored, wait_for
from tests.support import dicomfiles
from tests.support.harness import reap, start_process

SETTLE = 0.5
PAUSE = 4 * SETTLE
TIMING = ("--settle", str(SETTLE), "--interval", "0.1")


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    proc, port = start_process(valkey_server.url, "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.kill()


def a_slice() -> bytes:
    """A real MR slice (nibabel's test data, 226,390 bytes) or, without nibabel, a made one."""
    spec = importlib.util.find_spec("nibabel")
    if spec is not None and spec.origin is not None:
        real = Path(spec.origin).parent / "nicom" / "tests" / "data" / "0.dcm"
        if real.is_file():
            return real.read_bytes()
    return dicomfiles.slice_file(rows=256, columns=256)


def stays_absent(port: int, key: str, seconds: float) -> None:
    """The key is absent at every look for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert stored(port, key) is None, f"{key} was published before it was complete"
        time.sleep(0.1)


def start(agents: list[Agent], port: int, scans: Path, prefix: str, log: Path) -> Agent:
    agent = Agent(port, scans, prefix, log, *TIMING)
    agents.append(agent)
    wait_for("the agent to start", lambda: "watching" in agent.log())
    return agent


def test_a_dicom_writer_pausing_longer_than_settle_is_not_published_until_complete(
    port: int, prefix: str, tmp_path: Path, agents: list[Agent]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    agent = start(agents, port, scans, prefix, tmp_path / "log")
    data = a_slice()
    cut = len(data) * 2 // 5  # 90,556 of a real slice's 226,390 bytes
    target = scans / "IMG0001.dcm"
    # The writer closes the file during its pause: only the DICOM walk can tell.
    target.write_bytes(data[:cut])
    stays_absent(port, prefix + "IMG0001.dcm", PAUSE)
    assert "waiting for IMG0001.dcm: incomplete DICOM" in agent.log()
    assert "1 waiting (1 incomplete DICOM)" in agent.log()
    with open(target, "ab") as fh:
        fh.write(data[cut:])
    wait_for("the whole slice", lambda: stored(port, prefix + "IMG0001.dcm") == data)
    assert agent.stop() == 0
    assert len(sent_lines(agent.log(), "IMG0001.dcm")) == 1


def test_a_file_still_open_for_writing_is_not_published_until_closed(
    port: int, prefix: str, tmp_path: Path, agents: list[Agent]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    agent = start(agents, port, scans, prefix, tmp_path / "log")
    data = bytes(range(256)) * 1000
    with open(scans / "t1.nii", "wb") as writer:  # this process is the scanner
        writer.write(data[:100_000])
        writer.flush()
        stays_absent(port, prefix + "t1.nii", PAUSE)
        assert "1 waiting (1 open for writing by another program)" in agent.log()
        writer.write(data[100_000:])
    wait_for("the closed file", lambda: stored(port, prefix + "t1.nii") == data)
    assert agent.stop() == 0


def test_include_exclude_and_the_pass_summary(port: int, prefix: str, tmp_path: Path) -> None:
    names = [
        "s1/IMG0001.dcm",
        "s1/IMG0002.DCM",
        "s1/report.pdf",
        "scratch/IMG0003.dcm",
        "Thumbs.db",
        "s1/copy.dcm.tmp",
        "s1/IMG0004.dcm.part",
        ".DS_Store",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    rc, log = run_once(
        port, tmp_path, prefix, "--settle", "0", "--include", "*.dcm", "--exclude", "scratch/*"
    )
    assert rc == 0, log
    sent = [name for name in names if sent_lines(log, name)]
    assert sent == ["s1/IMG0001.dcm", "s1/IMG0002.DCM"]
    # .DS_Store is a dotfile: passed over without being counted.
    assert "pass done: 2 sent; 5 left out (4 excluded, 1 not included)" in log

    # Without --include, the defaults still leave out the junk; report.pdf goes.
    rc, log = run_once(port, tmp_path, prefix + "all/", "--settle", "0")
    assert rc == 0, log
    assert [n for n in names if sent_lines(log, n)] == [
        "s1/IMG0001.dcm",
        "s1/IMG0002.DCM",
        "s1/report.pdf",
        "scratch/IMG0003.dcm",
    ]
    assert "3 left out (3 excluded)" in log


def test_once_leaves_an_incomplete_dicom_and_says_so(
    port: int, prefix: str, tmp_path: Path
) -> None:
    data = a_slice()
    (tmp_path / "IMG.dcm").write_bytes(data[:-1])
    rc, log = run_once(port, tmp_path, prefix, "--settle", "0")
    assert rc == 0, log
    assert "pass done: 0 sent; 1 waiting (1 incomplete DICOM)" in log
    assert stored(port, prefix + "IMG.dcm") is None
