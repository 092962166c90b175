"""Unit tests for client/writers.py: a file another process writes is seen as held."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import writers

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the /proc check is Linux's"
)

HOLD = "import sys; f = open(sys.argv[1], sys.argv[2]); print('open', flush=True); sys.stdin.read()"


@contextlib.contextmanager
def holder(path: Path, mode: str) -> Iterator[None]:
    """Another process holding ``path`` open in ``mode`` until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "open\n"
    try:
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.parametrize("mode", ["ab", "wb", "r+b"])
def test_a_file_open_for_writing_elsewhere_is_held(tmp_path: Path, mode: str) -> None:
    target, other = tmp_path / "slice.dcm", tmp_path / "other.dcm"
    target.write_bytes(b"x")
    other.write_bytes(b"y")
    assert writers.can_tell()
    with holder(target, mode):
        assert writers.held_for_writing([str(target), str(other)]) == {str(target)}
    assert writers.held_for_writing([str(target)]) == set()


def test_readers_and_this_process_do_not_count(tmp_path: Path) -> None:
    target = tmp_path / "slice.dcm"
    target.write_bytes(b"x")
    with holder(target, "rb"):
        assert writers.held_for_writing([str(target)]) == set()
    with open(target, "ab"):
        assert writers.held_for_writing([str(target)]) == set()
    assert writers.held_for_writing([]) == set()
