"""storage/keyfile.py: what a key file must be, and refusals that never show a key."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from service import keys as keys_command
from storage.keyfile import KeyFileError, load, new_line, sealer

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(1, 33))).decode()


def write(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "keys"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def refusal(path: str) -> str:
    with pytest.raises(KeyFileError) as refused:
        load(path)
    message = str(refused.value)
    assert KEY not in message
    assert OTHER not in message
    return message.removeprefix(path)


def test_first_key_seals_all_keys_open(tmp_path: Path) -> None:
    path = write(tmp_path, f"# rotated in March\nk2 {OTHER}\n\nk1 {KEY}  # until April\n")
    assert load(path).ids == ("k2", "k1")
    assert load(path).primary == "k2"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_file_others_may_read_or_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path, f"k1 {KEY}\n", mode)
    assert (
        refusal(path) == f": group or others may read or change it (mode {mode:04o}); chmod 600 it"
    )


def test_owner_only_modes_are_accepted(tmp_path: Path) -> None:
    for mode in (0o600, 0o400):
        assert load(write(tmp_path, f"k1 {KEY}\n", mode)).ids == ("k1",)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", ": no keys"),
        ("# only a comment\n\n", ": no keys"),
        (f"k1 {KEY[:-2]}!!\n", ":1: key 'k1' is not valid base64"),
        (f"k1 {base64.b64encode(bytes(16)).decode()}\n", ":1: key 'k1' is 16 bytes, not 32"),
        (f"k1 {KEY}\nk1 {OTHER}\n", ":2: key id 'k1' is used twice"),
        (f"k1 {KEY} extra\n", ":1: expected '<key-id> <base64 of 32 bytes>'"),
        (f"{KEY}\n", ":1: expected '<key-id> <base64 of 32 bytes>'"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_line(tmp_path: Path, text: str, why: str) -> None:
    assert refusal(write(tmp_path, text)) == why


def test_a_key_written_before_its_id_is_refused_without_echoing_it(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, f"{KEY} k1\n"))
    assert message.startswith(":1: a key id is 1 to 32 letters")


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    assert refusal(str(tmp_path / "missing")) == ": cannot read: No such file or directory"


def test_a_reload_of_a_bad_file_keeps_the_old_keys(tmp_path: Path) -> None:
    path = write(tmp_path, f"k1 {KEY}\n")
    s = sealer(path)
    Path(path).write_text("k2 short\n")
    with pytest.raises(KeyFileError):
        s.reload()
    kept = s.keyring
    assert kept is not None
    assert kept.ids == ("k1",)
    Path(path).write_text(f"k2 {OTHER}\nk1 {KEY}\n")
    reloaded = s.reload()
    assert reloaded is s.keyring
    assert reloaded is not None
    assert reloaded.ids == ("k2", "k1")
    assert not sealer(None).encrypting


def test_new_lines_load(tmp_path: Path) -> None:
    first, second = new_line(), new_line("site-2")
    assert first.split()[0].startswith("k")
    assert second.split()[0] == "site-2"
    assert first.split()[1] != second.split()[1]
    assert load(write(tmp_path, f"{second}\n{first}\n")).ids == ("site-2", first.split()[0])
    with pytest.raises(ValueError, match="key id"):
        new_line("has space")


def test_the_command_prints_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert keys_command.main(["new", "k9"]) == 0
    line = capsys.readouterr().out
    assert load(write(tmp_path, line)).ids == ("k9",)
    assert keys_command.main([]) == 2
    assert "usage" in capsys.readouterr().err
