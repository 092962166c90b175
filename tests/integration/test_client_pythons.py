"""The client under every CPython from 3.8 to 3.13 this machine has, against a real server.

Scanner consoles run the Python their vendor shipped, so client/ must work
from 3.8 on. Each version present under ``~/.pyenv/versions`` (or named in
``VALISE_TEST_PYTHONS``, ``3.9=/opt/py39/bin/python,...``) runs
pythons_roundtrip.py in one subprocess; a version that is missing is skipped
with the place it was looked for. 3.6 and 3.7 must say, in one line, which
Python is needed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.embedded import EmbeddedValkey
from tests.support.harness import ROOT, reap, start_process

PYENV = Path.home() / ".pyenv" / "versions"
SUPPORTED = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
TOO_OLD = ("3.6", "3.7")
SCRIPT = Path(__file__).with_name("pythons_roundtrip.py")
NEEDS = "valise client needs Python 3.8 or newer"


def interpreter(minor: str) -> Path | None:
    """The newest CPython ``minor``.x found, or None."""
    named = dict(
        item.split("=", 1) for item in os.environ.get("VALISE_TEST_PYTHONS", "").split(",") if item
    )
    if minor in named:
        return Path(named[minor])
    found = []
    for candidate in PYENV.glob(f"{minor}.*/bin/python"):
        patch = re.fullmatch(rf"{re.escape(minor)}\.(\d+)", candidate.parent.parent.name)
        if patch:
            found.append((int(patch.group(1)), candidate))
    return max(found)[1] if found else None


def python_or_skip(minor: str) -> Path:
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"no CPython {minor} on this machine (looked in {PYENV}/{minor}.*)")
    return python


def child_env() -> dict[str, str]:
    """The repository on the path, no bytecode written into it, nothing of the venv's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8")
    env.pop("VALISE_TOKEN", None)
    return env


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    """One server process for all versions; 64 KiB chunks, so the files span several."""
    proc, port = start_process(valkey_server.url, "--chunk-size", "64KiB", "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


@pytest.mark.parametrize("minor", SUPPORTED)
def test_round_trip_under_each_python(minor: str, port: int, prefix: str, tmp_path: Path) -> None:
    python = python_or_skip(minor)
    result = subprocess.run(
        [str(python), str(SCRIPT), f"127.0.0.1:{port}", prefix, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"round trip ok {minor}.")


@pytest.mark.parametrize("minor", TOO_OLD)
def test_older_pythons_get_one_clear_line(minor: str, tmp_path: Path) -> None:
    python = python_or_skip(minor)
    cli = subprocess.run(
        [str(python), "-m", "client", "put", "x", "k"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1
    assert cli.stdout == ""
    [line] = cli.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"{NEEDS} (this is Python {minor}.")
    library = subprocess.run(
        [str(python), "-c", "import client"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert library.returncode == 1
    assert f"ImportError: {NEEDS}" in library.stderr
