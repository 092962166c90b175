"""client/follow.py without a server: where a key may go under DIR, and where not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.follow import _make_parents, _same_file, local_path


@pytest.mark.parametrize(
    ("key", "relative"),
    [
        ("scans/a.dcm", "a.dcm"),
        ("scans/p1/s2/slice 0001.dcm", "p1/s2/slice 0001.dcm"),
        ("scans/.hidden", ".hidden"),
        ("scans/..x/y", "..x/y"),
        ("scans/ü/*?[{", "ü/*?[{"),
    ],
)
def test_a_key_becomes_folders_under_dir(key: str, relative: str) -> None:
    assert local_path("/d", "scans/", key) == os.path.join("/d", *relative.split("/"))


@pytest.mark.parametrize(
    "key",
    [
        "scans/",
        "scans/../etc/passwd",
        "scans/a/../../b",
        "scans/./a",
        "scans//etc/passwd",
        "scans/a//b",
        "scans/a/",
        "scans/nul\x00x",
        "other/a",
    ],
)
def test_no_key_leaves_dir(key: str) -> None:
    assert local_path("/d", "scans/", key) is None


def test_an_empty_prefix_follows_everything() -> None:
    assert local_path("/d", "", "a/b") == os.path.join("/d", "a", "b")
    assert local_path("/d", "", "/etc/passwd") is None


def test_folders_are_made_but_links_and_files_are_not_followed(tmp_path: Path) -> None:
    inside = tmp_path / "dir"
    outside = tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    assert _make_parents(str(inside), str(inside / "a" / "b" / "f"))
    assert (inside / "a" / "b").is_dir()
    (inside / "link").symlink_to(outside)
    assert not _make_parents(str(inside), str(inside / "link" / "x" / "f"))
    assert not (outside / "x").exists()
    (inside / "file").write_bytes(b"")
    assert not _make_parents(str(inside), str(inside / "file" / "f"))
    # The destination itself may not be a directory or a link.
    assert not _make_parents(str(inside), str(inside / "a"))
    assert not _make_parents(str(inside), str(inside / "link"))


def test_a_held_file_is_recognised_by_size_and_sha1(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    sha1 = "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert _same_file(str(path), {"size": 3, "sha1": sha1})
    assert not _same_file(str(path), {"size": 3, "sha1": "0" * 40})
    assert not _same_file(str(path), {"size": 4, "sha1": sha1})
    assert not _same_file(str(tmp_path / "missing"), {"size": 3, "sha1": sha1})
