"""Unit tests for client/cli.py: exit codes, server addresses, sizes as people read them."""

from __future__ import annotations

import pytest

from client import errors
from client.cli import build_parser, exit_code_for, parse_server
from client.console import describe, error_json


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


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("valise://planning:7070", "planning:7070"),
        ("tcp://10.0.0.5:7070/", "10.0.0.5:7070"),
        ("planning:7070/scans", "planning:7070"),
    ],
)
def test_parse_server_refuses_a_url_and_says_what_to_type(text: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"not a URL: try --server {suggestion}$"):
        parse_server(text)


def test_errors_print_with_their_key_and_as_json() -> None:
    exc = errors.NotFound("no such file", fatal=False)
    exc.key = "patients/1234/t1.nii"
    assert str(exc) == "not_found: patients/1234/t1.nii: no such file"
    assert error_json(exc) == {
        "error": {
            "code": "not_found",
            "message": "no such file",
            "key": "patients/1234/t1.nii",
            "exit_code": 3,
        }
    }
    missing = FileNotFoundError(2, "output folder does not exist", "/data/out")
    assert describe(missing) == "output folder does not exist: /data/out"
    assert error_json(missing)["error"] == {
        "code": "enoent",
        "message": "output folder does not exist: /data/out",
        "path": "/data/out",
        "exit_code": 1,
    }


@pytest.mark.parametrize(
    ("argv", "wait"),
    [
        (["follow", "p/", "-o", "out"], 60.0),
        (["follow", "p/", "-o", "out", "--retry-max-wait", "7"], 7.0),
        (["follow", "p/", "-o", "out", "--max-backoff", "3"], 3.0),  # the old spelling
        (["watch", ".", "--retry-max-wait", "7"], 7.0),
        (["watch", ".", "--max-backoff", "3"], 3.0),
        (["events", "--retry-max-wait", "7"], 7.0),
    ],
)
def test_one_retry_cap_for_every_command(argv: list[str], wait: float) -> None:
    # The agents once read a cap of their own and ignored --retry-max-wait;
    # both spellings now set the one value every command reads.
    args = build_parser().parse_args(argv)
    assert args.retry_max_wait == wait
    assert not hasattr(args, "max_backoff")
