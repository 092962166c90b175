"""Unit tests for client/watchstate.py: the state lives in the user's folder, not the scanner's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.watchdefaults import state_dir
from client.watchstate import SentRecord, StateFile, default_state_path


def test_state_dir_follows_each_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("XDG_STATE_HOME", "/x/state")
    assert state_dir() == os.path.join("/x/state", "valise")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir() == str(tmp_path / ".local" / "state" / "valise")
    monkeypatch.setattr("sys.platform", "darwin")
    assert state_dir() == str(tmp_path / "Library" / "Application Support" / "valise")
    monkeypatch.setattr("sys.platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", "/users/tech/AppData/Local")
    assert state_dir() == os.path.join("/users/tech/AppData/Local", "valise")


def test_one_state_file_per_folder_and_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/s")
    monkeypatch.setattr("sys.platform", "linux")
    a = default_state_path("/data/export", "planning", 7070)
    assert a.startswith("/s/valise/watch-export-") and a.endswith(".json")
    assert a == default_state_path("/data/export/", "planning", 7070)
    assert a != default_state_path("/data/export", "other", 7070)
    assert a != default_state_path("/data/export2", "planning", 7070)


def test_save_creates_the_folder_and_load_reads_it_back(tmp_path: Path) -> None:
    logged: list[str] = []
    path = tmp_path / "deep" / "valise" / "watch.json"
    state = StateFile(str(path), logged.append)
    state.records["a.dcm"] = SentRecord("a.dcm", 3, 42, "ab" * 20, "k/a.dcm", 1.5)
    state.save()
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    again = StateFile(str(path), logged.append)
    again.load()
    assert again.records == state.records
    assert logged == []
