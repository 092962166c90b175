"""service/config.py: what a flag or a VALISE_* variable makes the server do, or refuse."""

from __future__ import annotations

import os

import pytest

from service.config import Config, parse_args

SWITCHES = ("log-keys", "allow-persistence", "valkey-cluster")


def env_name(flag: str) -> str:
    return "VALISE_" + flag.upper().replace("-", "_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' own VALISE_* variables only, whatever the shell running them had."""
    for name in [n for n in os.environ if n.startswith("VALISE_")]:
        monkeypatch.delenv(name)


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one line a refused configuration prints (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("server.py: error: ")
    assert "Traceback" not in err
    return err.strip()


def setting(config: Config, flag: str) -> object:
    return getattr(config, flag.replace("-", "_"))


@pytest.mark.parametrize("flag", SWITCHES)
@pytest.mark.parametrize(
    ("word", "on"),
    [
        *[(w, True) for w in ("1", "true", "yes", "on", "TRUE", "Yes", "ON", "oN")],
        *[(w, False) for w in ("0", "false", "no", "off", "FALSE", "No", "OFF", "oFf")],
    ],
)
def test_switch_variable_words(
    monkeypatch: pytest.MonkeyPatch, flag: str, word: str, on: bool
) -> None:
    if flag == "valkey-cluster":
        monkeypatch.setenv("VALISE_VALKEY_URL", "valkey://127.0.0.1:6379")
    monkeypatch.setenv(env_name(flag), word)
    assert setting(parse_args([]), flag) is on


@pytest.mark.parametrize("flag", SWITCHES)
@pytest.mark.parametrize("word", ["maybe", "", "2", "y", "n", " yes", "enable", "nein"])
def test_switch_variable_refuses_other_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str, word: str
) -> None:
    monkeypatch.setenv(env_name(flag), word)
    line = refused(capsys, [])
    assert line.startswith(f"server.py: error: {env_name(flag)}: not a switch: {word!r}")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VALISE_PORT", "abc"),
        ("VALISE_PORT", ""),
        ("VALISE_CHUNK_SIZE", "lots"),
        ("VALISE_CHUNK_SIZE", "8 parsecs"),
        ("VALISE_IDLE_TIMEOUT", "soon"),
        ("VALISE_WORKERS", "2.5"),
    ],
)
def test_bad_variable_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    line = refused(capsys, [])
    assert line.startswith(f"server.py: error: {name}: ")
    assert repr(value) in line
