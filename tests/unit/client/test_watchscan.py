"""Unit tests for client/watchscan.py: what the agent leaves out of a scanner's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.watchscan import Filters, scan


@pytest.mark.parametrize(
    "rel",
    ["Thumbs.db", "p1/THUMBS.DB", ".DS_Store", "a.tmp", "s/IMG.PART", "x.partial", "~$notes.docx"],
)
def test_default_excludes(rel: str) -> None:
    assert Filters().excluded(rel) == "excluded"
    assert Filters(defaults=False).excluded(rel) is None


def test_include_keeps_only_matches_without_regard_to_case() -> None:
    only_dicom = Filters(include=["*.dcm"])
    assert only_dicom.excluded("s1/IMG0001.DCM") is None
    assert only_dicom.excluded("s1/report.pdf") == "not included"
    assert only_dicom.excluded("s1/x.dcm.tmp") == "excluded"


def test_a_pattern_with_a_slash_matches_the_relative_path() -> None:
    filters = Filters(exclude=["scratch/*"])
    assert filters.excluded("scratch/a.dcm") == "excluded"
    assert filters.excluded("p1/scratch.dcm") is None


def test_scan_skips_dotfiles_and_reports_what_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "s 1").mkdir()
    (tmp_path / "s 1" / "b.dcm").write_bytes(b"b")
    (tmp_path / "a.dcm").write_bytes(b"a")
    (tmp_path / ".hidden").write_bytes(b"h")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "c").write_bytes(b"c")
    os.mkfifo(tmp_path / "pipe")
    left: list[tuple[str, str]] = []
    found = list(scan(str(tmp_path), lambda p: False, lambda rel, why: left.append((rel, why))))
    assert [(s.rel, s.size) for s in found] == [("a.dcm", 1), ("s 1/b.dcm", 1)]
    assert left == [("pipe", "not a regular file")]
