"""Unit tests for client/cli.py: exit codes, server addresses, sizes as people read them."""

from __future__ import annotations

import pytest

from client import errors
from client.cli import exit_code_for, parse_server


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.NotFound(), 3),
        (errors.ChecksumMismatch(), 4),
        (errors.SizeMismatch(), 4),
        (errors.Corrupt(), 4),
        (errors.IntegrityError(), 4),
        (errors.Unavailable(), 5),
        (errors.Busy(), 5),
        (errors.ConnectionFailed(), 5),
        (errors.ConnectionLost(), 5),
        (errors.BadKey(), 1),
        (errors.StorageFull(), 1),
        (errors.Exists(), 6),
        (errors.Unsupported(), 1),
        (RuntimeError(), 1),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7070", ("127.0.0.1", 7070)),
        ("example:1", ("example", 1)),
        ("example", ("example", 7070)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 7070)),
        ("::1", ("::1", 7070)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["host:x", ":7070", "host:0", "host:70000"])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad server"):
        parse_server(text)
