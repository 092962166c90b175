"""Unit tests for protocol/requests.py: field types, key rules, limits, fatality.

(tests/test_requests.py holds the integration tests of the same requests over TCP.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from protocol import requests
from protocol.errors import ErrorCode, ProtocolError
from protocol.requests import (
    DEFAULT_LIST_LIMIT,
    MAX_KEY_BYTES,
    MAX_LIST_LIMIT,
    Delete,
    Get,
    Hello,
    List,
    Ping,
    Put,
    Stat,
    check_key,
    parse_delete,
    parse_get,
    parse_hello,
    parse_list,
    parse_stat,
)

MAX_FILE_SIZE = 1000
MAX_TTL = 3600


def parse_put(obj: dict[str, Any]) -> Put:
    return requests.parse_put(obj, max_file_size=MAX_FILE_SIZE, max_ttl=MAX_TTL)


Parser = Callable[[dict[str, Any]], object]

#: Parsers of requests that carry a key, with the fatality of their errors.
KEYED: list[tuple[Parser, bool]] = [
    (parse_put, True),
    (parse_get, False),
    (parse_stat, False),
    (parse_delete, False),
]
KEYED_IDS = ["put", "get", "stat", "delete"]


def error_of(parse: Parser, obj: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse(obj)
    return info.value


# -- keys (docs/protocol.md section 3) ----------------------------------------------

GOOD_KEYS = [
    "a",
    "a/b/c",
    "/",
    "scans/2024/*",
    "?",
    "[",
    "{",
    "a*b?c[d]{e}",
    "x" * MAX_KEY_BYTES,
    "\u00e9" * 512,  # 1024 bytes of 2-byte characters
    "\u20ac" * 341 + "a",  # 1023 + 1 bytes
    "\U0001f600" * 256,  # 1024 bytes of 4-byte characters
    "\u0080\u009f",  # C1 controls are not in the forbidden range
    " ",
    "~",
]

BAD_KEYS = [
    "",
    "x" * (MAX_KEY_BYTES + 1),
    "\u00e9" * 512 + "a",  # 1025 bytes, 513 characters
    "\u20ac" * 342,  # 1026 bytes, 342 characters
    "\U0001f600" * 256 + "a",
    "\x00",
    "a\x00b",
    "\x01",
    "\t",
    "a\nb",
    "\r",
    "\x1f",
    "\x7f",
    "a\x7f",
    "\ud800",  # lone surrogate: no UTF-8 form
    "a\udfffb",
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_check_key_accepts(key: str) -> None:
    check_key(key, fatal=True)


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize("fatal", [True, False])
def test_check_key_rejects(key: str, fatal: bool) -> None:
    with pytest.raises(ProtocolError) as info:
        check_key(key, fatal=fatal)
    assert info.value.code is ErrorCode.BAD_KEY
    assert info.value.fatal is fatal


@pytest.mark.parametrize("key", GOOD_KEYS)
@pytest.mark.parametrize(("parse", "fatal"), KEYED, ids=KEYED_IDS)
def test_keyed_requests_keep_good_keys(parse: Parser, fatal: bool, key: str) -> None:
    request = parse({"key": key})
    assert isinstance(request, Put | Get | Stat | Delete)
    assert request.key == key


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.parametrize(("parse", "fatal"), KEYED, ids=KEYED_IDS)
def test_keyed_requests_reject_bad_keys(parse: Parser, fatal: bool, key: str) -> None:
    exc = error_of(parse, {"key": key})
    assert exc.code is ErrorCode.BAD_KEY
    assert exc.fatal is fatal


@pytest.mark.parametrize("obj", [{}, {"key": None}, {"other": "k"}])
@pytest.mark.parametrize(("parse", "fatal"), KEYED, ids=KEYED_IDS)
def test_missing_key_is_bad_request(parse: Parser, fatal: bool, obj: dict[str, Any]) -> None:
    exc = error_of(parse, obj)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is fatal


@pytest.mark.parametrize("key", [1, 1.5, True, ["k"], {"k": 1}])
@pytest.mark.parametrize(("parse", "fatal"), KEYED, ids=KEYED_IDS)
def test_non_string_key_is_bad_request(parse: Parser, fatal: bool, key: object) -> None:
    exc = error_of(parse, {"key": key})
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is fatal


# -- HELLO -------------------------------------------------------------------------


def test_hello_minimal() -> None:
    assert parse_hello({"version": 1}) == Hello(1, None, None)


def test_hello_full_and_unknown_fields_ignored() -> None:
    obj = {"version": 1, "token": "t", "client": "agent/1", "future": [1]}
    assert parse_hello(obj) == Hello(1, "t", "agent/1")


def test_hello_null_optionals_are_absent() -> None:
    assert parse_hello({"version": 1, "token": None, "client": None}) == Hello(1, None, None)


def test_hello_other_version_is_parsed_for_the_state_machine_to_refuse() -> None:
    assert parse_hello({"version": 2}).version == 2


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"version": None},
        {"version": "1"},
        {"version": 1.0},
        {"version": True},
        {"version": [1]},
        {"version": 1, "token": 5},
        {"version": 1, "client": False},
    ],
)
def test_hello_errors_are_fatal_bad_request(obj: dict[str, Any]) -> None:
    exc = error_of(parse_hello, obj)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is True


# -- PUT ---------------------------------------------------------------------------


def test_put_minimal() -> None:
    assert parse_put({"key": "k"}) == Put("k", None, None, None)


def test_put_full() -> None:
    obj = {"key": "k", "size": 10, "ttl": 60, "content_type": "application/dicom", "x": 1}
    assert parse_put(obj) == Put("k", 10, 60, "application/dicom")


def test_put_null_optionals_are_absent() -> None:
    obj = {"key": "k", "size": None, "ttl": None, "content_type": None}
    assert parse_put(obj) == Put("k", None, None, None)


def test_put_limits_inclusive() -> None:
    assert parse_put({"key": "k", "size": 0}).size == 0
    assert parse_put({"key": "k", "size": MAX_FILE_SIZE}).size == MAX_FILE_SIZE
    assert parse_put({"key": "k", "ttl": 1}).ttl == 1
    assert parse_put({"key": "k", "ttl": MAX_TTL}).ttl == MAX_TTL


@pytest.mark.parametrize(
    "extra",
    [
        {"size": True},
        {"size": False},
        {"size": -1},
        {"size": 1.5},
        {"size": 10.0},
        {"size": "10"},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": MAX_TTL + 1},
        {"ttl": True},
        {"ttl": "60"},
        {"content_type": 5},
        {"content_type": ["text/plain"]},
        {"content_type": "x" * 256},
        {"content_type": "é" * 128},  # 256 bytes of UTF-8
        {"content_type": "text/plain\r\nX-Injected: 1"},
    ],
)
def test_put_bad_fields_are_fatal_bad_request(extra: dict[str, Any]) -> None:
    exc = error_of(parse_put, {"key": "k", **extra})
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is True


def test_put_content_type_at_its_limit_is_accepted() -> None:
    assert parse_put({"key": "k", "content_type": "x" * 255}).content_type == "x" * 255


@pytest.mark.parametrize("size", [MAX_FILE_SIZE + 1, 10**30])
def test_put_size_over_max_file_size_is_fatal_too_large(size: int) -> None:
    exc = error_of(parse_put, {"key": "k", "size": size})
    assert exc.code is ErrorCode.TOO_LARGE
    assert exc.fatal is True


# -- GET / STAT / DELETE -------------------------------------------------------------


def test_get() -> None:
    assert parse_get({"key": "k"}) == Get("k", None, None)
    assert parse_get({"key": "k", "offset": 0, "length": 0}) == Get("k", 0, 0)
    assert parse_get({"key": "k", "offset": 5, "length": 10**12}) == Get("k", 5, 10**12)
    assert parse_get({"key": "k", "offset": None, "length": None}) == Get("k", None, None)


@pytest.mark.parametrize(
    "extra",
    [
        {"offset": -1},
        {"length": -1},
        {"offset": True},
        {"length": False},
        {"offset": "0"},
        {"length": 2.0},
    ],
)
def test_get_bad_fields_are_non_fatal_bad_request(extra: dict[str, Any]) -> None:
    exc = error_of(parse_get, {"key": "k", **extra})
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is False


def test_stat_and_delete() -> None:
    assert parse_stat({"key": "k", "extra": 1}) == Stat("k")
    assert parse_delete({"key": "k", "extra": 1}) == Delete("k")


# -- LIST --------------------------------------------------------------------------


def test_list_defaults() -> None:
    assert parse_list({}) == List(prefix="", cursor=None, limit=DEFAULT_LIST_LIMIT)
    assert DEFAULT_LIST_LIMIT == 100
    assert MAX_LIST_LIMIT == 1000


def test_list_null_fields_are_absent() -> None:
    assert parse_list({"prefix": None, "cursor": None, "limit": None}) == List("", None, 100)


def test_list_prefix_is_literal() -> None:
    assert parse_list({"prefix": "a*?[{", "cursor": "c1"}) == List("a*?[{", "c1", 100)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(1, 1), (99, 99), (100, 100), (1000, 1000), (1001, 1000), (10**12, 1000)],
)
def test_list_limit_is_cut_to_1000(limit: int, expected: int) -> None:
    assert parse_list({"limit": limit}).limit == expected


@pytest.mark.parametrize(
    "obj",
    [
        {"limit": 0},
        {"limit": -1},
        {"limit": True},
        {"limit": "10"},
        {"limit": 10.0},
        {"prefix": 5},
        {"cursor": 5},
        {"cursor": ["c"]},
    ],
)
def test_list_bad_fields_are_non_fatal_bad_request(obj: dict[str, Any]) -> None:
    exc = error_of(parse_list, obj)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is False


# -- PING ----------------------------------------------------------------------------


def test_ping_keeps_its_raw_payload() -> None:
    assert Ping(b'{"a": 1}').payload == b'{"a": 1}'


# -- strings without a UTF-8 form ------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "obj", "fatal"),
    [
        (parse_hello, {"version": 1, "token": "\ud800"}, True),
        (parse_hello, {"version": 1, "client": "a\udfff"}, True),
        (parse_put, {"key": "k", "content_type": "\ud800"}, True),
        (parse_list, {"prefix": "\ud800"}, False),
        (parse_list, {"cursor": "\udc00x"}, False),
    ],
)
def test_lone_surrogate_in_a_string_field_is_bad_request(
    parse: Parser, obj: dict[str, Any], fatal: bool
) -> None:
    exc = error_of(parse, obj)
    assert exc.code is ErrorCode.BAD_REQUEST
    assert exc.fatal is fatal


# -- revision 2 fields ---------------------------------------------------------


def test_put_resumable_and_if_absent() -> None:
    put = parse_put({"key": "k", "resumable": True, "if_absent": True})
    assert (put.resumable, put.if_absent) == (True, True)
    put = parse_put({"key": "k", "resumable": None})
    assert (put.resumable, put.if_absent) == (False, False)


@pytest.mark.parametrize("extra", [{"resumable": 1}, {"if_absent": "yes"}, {"resumable": []}])
def test_put_switches_must_be_booleans(extra: dict[str, Any]) -> None:
    exc = error_of(parse_put, {"key": "k", **extra})
    assert exc.code is ErrorCode.BAD_REQUEST and exc.fatal


def test_get_version() -> None:
    assert requests.parse_get({"key": "k", "version": "v1"}).version == "v1"
    for bad in ("", "x" * 129, 5):
        exc = error_of(requests.parse_get, {"key": "k", "version": bad})
        assert exc.code is ErrorCode.BAD_REQUEST and not exc.fatal


def test_resume_errors_are_never_fatal() -> None:
    assert requests.parse_resume({"upload_id": "x" * 128}) == requests.Resume("x" * 128)
    for obj in (
        {},
        {"upload_id": None},
        {"upload_id": ""},
        {"upload_id": "x" * 129},
        {"upload_id": 7},
    ):
        exc = error_of(requests.parse_resume, obj)
        assert exc.code is ErrorCode.BAD_REQUEST and not exc.fatal


def test_subscribe() -> None:
    assert requests.parse_subscribe({}) == requests.Subscribe("", None)
    assert requests.parse_subscribe({"prefix": "a/", "since": "5-0"}) == requests.Subscribe(
        "a/", "5-0"
    )
    exc = error_of(requests.parse_subscribe, {"prefix": 3})
    assert exc.code is ErrorCode.BAD_REQUEST and not exc.fatal
