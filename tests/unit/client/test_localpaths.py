"""Unit tests for client/localpaths.py: keys to local paths, never outside the output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.localpaths import UnsafeKey, folder_prefix, local_target, plan_put, unsafe_reason


@pytest.mark.parametrize(
    "rel", ["a", "series 1/IMG 0001.dcm", "séries/ß.dcm", "a/b/c.nii.gz", "..a"]
)
def test_plain_relative_paths_are_safe_everywhere(rel: str) -> None:
    assert unsafe_reason(rel, windows=False) is None
    assert unsafe_reason(rel, windows=True) is None


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("", "nothing after the prefix"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("..", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a\\..\\x", "backslash"),
        ("C:/x", "':'"),
        ("c:x", "':'"),
        ("a/b:stream", "':'"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("./a", "'.'"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
    ],
)
def test_unsafe_paths_are_refused_with_a_reason(rel: str, why: str) -> None:
    for windows in (False, True):
        reason = unsafe_reason(rel, windows=windows)
        assert reason is not None and why in reason


@pytest.mark.parametrize(
    "rel", ["CON", "series/nul.dcm", "COM1.txt", "lpt9", "a./b", "a /b", "a?b"]
)
def test_names_windows_cannot_hold_are_refused_there_only(rel: str) -> None:
    assert unsafe_reason(rel, windows=False) is None
    assert unsafe_reason(rel, windows=True) is not None


def test_folder_prefix() -> None:
    assert folder_prefix("") == ""
    assert folder_prefix("patients/1234") == "patients/1234/"
    assert folder_prefix("patients/1234/") == "patients/1234/"


def test_local_target_stays_inside_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = local_target(str(out), "p/", "p/series 1/a.dcm")
    assert Path(target) == out / "series 1" / "a.dcm"
    with pytest.raises(UnsafeKey, match=r"'\.\.'"):
        local_target(str(out), "p/", "p/../x")
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(UnsafeKey, match="outside"):
        local_target(str(out), "p/", "p/link/x")


def test_plan_put_keys_are_prefix_plus_relative_path(tmp_path: Path) -> None:
    study = tmp_path / "study"
    (study / "s1").mkdir(parents=True)
    (study / "s1" / "b.dcm").write_bytes(b"bb")
    (study / "a.dcm").write_bytes(b"a")
    (tmp_path / "extra.txt").write_bytes(b"e")
    plan = plan_put([str(study), str(tmp_path / "extra.txt")], "p", recursive=True)
    assert [(f.key, f.size) for f in plan.files] == [
        ("p/a.dcm", 1),
        ("p/s1/b.dcm", 2),
        ("p/extra.txt", 1),
    ]
    assert plan.skipped == [] and plan.unreadable == []


def test_plan_put_refuses_a_folder_without_r_and_duplicate_keys(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"1")
    (tmp_path / "x").write_bytes(b"2")
    with pytest.raises(ValueError, match="is a directory"):
        plan_put([str(tmp_path / "d")], "p/", recursive=False)
    with pytest.raises(ValueError, match="would both be 'p/x'"):
        plan_put([str(tmp_path / "d"), str(tmp_path / "x")], "p/", recursive=True)
    with pytest.raises(ValueError, match="cannot read"):
        plan_put([str(tmp_path / "missing")], "p/", recursive=True)


def test_plan_put_skips_links_to_folders(tmp_path: Path) -> None:
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "loop").symlink_to(tmp_path, target_is_directory=True)
    plan = plan_put([str(tmp_path / "study")], "", recursive=True)
    assert plan.files == []
    assert [why for _, why in plan.skipped] == ["symbolic link to a directory (not followed)"]
