"""The CLI and ``watch`` on an event loop without signal support, as on Windows.

asyncio's Windows loops raise ``NotImplementedError`` from
``add_signal_handler``; the agent used it and crashed at start there. Here
the client runs on a loop subclass that does the same, and must still
upload, download, and stop cleanly on SIGINT (Ctrl+C) and SIGTERM.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.embedded import EmbeddedValkey
from tests.integration.test_watch import stored, wait_for
from tests.support.harness import ROOT, reap, start_process

#: Runs ``client.cli.main(argv)`` with every new loop unable to handle signals.
NO_SIGNALS = """
import asyncio, sys

class WindowsLikeLoop(asyncio.SelectorEventLoop):
    def add_signal_handler(self, sig, callback, *args):
        raise NotImplementedError
    def remove_signal_handler(self, sig):
        raise NotImplementedError

class Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return WindowsLikeLoop()

asyncio.set_event_loop_policy(Policy())
try:
    asyncio.new_event_loop().add_signal_handler(2, print)
except NotImplementedError:
    pass
else:
    raise SystemExit("the test loop handles signals")
from client.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    proc, port = start_process(valkey_server.url, "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


def command(port: int, *args: str) -> list[str]:
    return [sys.executable, "-c", NO_SIGNALS, "--server", f"127.0.0.1:{port}", *args]


def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_put_and_get(port: int, prefix: str, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    (tmp_path / "scan.nii").write_bytes(data)
    for args in (
        ["put", str(tmp_path / "scan.nii"), prefix + "scan.nii"],
        ["get", prefix + "scan.nii", "-o", str(tmp_path / "copy.nii")],
    ):
        result = subprocess.run(
            command(port, *args), capture_output=True, env=env(tmp_path), timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
    assert (
        hashlib.sha1((tmp_path / "copy.nii").read_bytes()).digest() == hashlib.sha1(data).digest()
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_watch_uploads_and_stops_on_a_signal(
    port: int, prefix: str, tmp_path: Path, sig: signal.Signals
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    log = tmp_path / "log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            command(
                port,
                "watch",
                str(scans),
                "--prefix",
                prefix,
                "--settle",
                "0.2",
                "--interval",
                "0.1",
            ),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env(tmp_path),
        )
        try:
            wait_for("the agent to start", lambda: "watching" in log.read_text())
            (scans / "slice.dcm").write_bytes(b"not really a scan")
            wait_for("the upload", lambda: stored(port, prefix + "slice.dcm") is not None)
            proc.send_signal(sig)
            assert proc.wait(timeout=20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert f"{sig.name}: stopped (1 sent)" in log.read_text()
    assert "Traceback" not in log.read_text()
