"""Unit tests for protocol/frames.py and protocol/errors.py: golden bytes, limits, type sets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.errors import ErrorCode, ProtocolError, bad_frame
from protocol.frames import (
    CLIENT_TYPES,
    CONTROL_TYPES,
    HEADER,
    HEADER_SIZE,
    MAX_CONTROL,
    SERVER_TYPES,
    FrameType,
    control_size,
    encode_control,
    encode_frame,
    list_page,
)


def joined(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(parts)


# -- wire constants ------------------------------------------------------------


def test_header_is_type_u8_then_length_u32_big_endian() -> None:
    assert HEADER.format == "!BI"
    assert HEADER_SIZE == 5
    assert HEADER.pack(0x03, 0x01020304) == b"\x03\x01\x02\x03\x04"


def test_frame_type_values_match_the_protocol_table() -> None:
    assert {t.name: int(t) for t in FrameType} == {
        "HELLO": 0x01,
        "PUT": 0x02,
        "DATA": 0x03,
        "END": 0x04,
        "GET": 0x05,
        "STAT": 0x06,
        "DELETE": 0x07,
        "LIST": 0x08,
        "PING": 0x09,
        "ABORT": 0x0A,
        "RESUME": 0x0B,
        "SUBSCRIBE": 0x0C,
        "OK": 0x80,
        "EVENT": 0x81,
        "ERROR": 0x8F,
    }


def test_direction_sets() -> None:
    assert frozenset(range(0x01, 0x0D)) == CLIENT_TYPES
    server = {FrameType.DATA, FrameType.END, FrameType.OK, FrameType.EVENT, FrameType.ERROR}
    assert server == SERVER_TYPES
    assert set(FrameType) - {FrameType.DATA, FrameType.END} == CONTROL_TYPES


def test_max_control_is_64_kib() -> None:
    assert MAX_CONTROL == 65536


# -- golden vectors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame_type", "obj", "expected"),
    [
        (FrameType.PING, {}, b"\x09\x00\x00\x00\x02{}"),
        (FrameType.HELLO, {"version": 1}, b'\x01\x00\x00\x00\x0d{"version":1}'),
        (FrameType.STAT, {"key": "a/b"}, b'\x06\x00\x00\x00\x0d{"key":"a/b"}'),
        # Non-ASCII goes out as UTF-8, not \\u escapes; the length counts bytes.
        (FrameType.PUT, {"key": "\u00e9"}, b'\x02\x00\x00\x00\x0c{"key":"\xc3\xa9"}'),
        (FrameType.ABORT, {}, b"\x0a\x00\x00\x00\x02{}"),
        (FrameType.OK, {"deleted": True}, b'\x80\x00\x00\x00\x10{"deleted":true}'),
        (
            FrameType.ERROR,
            {"code": "busy", "message": "", "fatal": True},
            b'\x8f\x00\x00\x00\x29{"code":"busy","message":"","fatal":true}',
        ),
    ],
)
def test_encode_control_golden(frame_type: FrameType, obj: dict[str, Any], expected: bytes) -> None:
    assert encode_control(frame_type, obj) == expected
    assert control_size(obj) == len(expected) - HEADER_SIZE


@pytest.mark.parametrize(
    ("frame_type", "payload", "header"),
    [
        (FrameType.DATA, b"abc", b"\x03\x00\x00\x00\x03"),
        (FrameType.DATA, b"", b"\x03\x00\x00\x00\x00"),
        (FrameType.END, bytes(range(20)), b"\x04\x00\x00\x00\x14"),
        (FrameType.END, b"a" * 40, b"\x04\x00\x00\x00\x28"),
        (FrameType.DATA, b"x" * 0x010203, b"\x03\x00\x01\x02\x03"),
    ],
)
def test_encode_frame_golden(frame_type: FrameType, payload: bytes, header: bytes) -> None:
    parts = encode_frame(frame_type, payload)
    assert parts[0] == header
    assert joined(parts) == header + payload


def test_encode_frame_default_payload_is_empty() -> None:
    assert joined(encode_frame(FrameType.ABORT)) == b"\x0a\x00\x00\x00\x00"


def test_encode_frame_does_not_copy_the_payload() -> None:
    payload = b"x" * (1024 * 1024)
    parts = encode_frame(FrameType.DATA, payload)
    assert len(parts) == 2
    assert parts[1] is payload
    view = memoryview(payload)[10:20]
    parts = encode_frame(FrameType.DATA, view)
    assert parts[1] is view
    assert parts[0] == b"\x03\x00\x00\x00\x0a"


# -- control payload limit -------------------------------------------------------


def _obj_of_size(size: int) -> dict[str, Any]:
    overhead = len(json.dumps({"p": ""}, separators=(",", ":")))
    return {"p": "x" * (size - overhead)}


def test_encode_control_accepts_exactly_64_kib() -> None:
    obj = _obj_of_size(MAX_CONTROL)
    assert control_size(obj) == MAX_CONTROL
    encoded = encode_control(FrameType.OK, obj)
    assert encoded[:HEADER_SIZE] == b"\x80\x00\x01\x00\x00"
    assert len(encoded) == HEADER_SIZE + MAX_CONTROL


def test_encode_control_refuses_over_64_kib() -> None:
    obj = _obj_of_size(MAX_CONTROL + 1)
    assert control_size(obj) == MAX_CONTROL + 1
    with pytest.raises(ValueError, match="exceeds"):
        encode_control(FrameType.OK, obj)


def test_control_size_counts_utf8_bytes() -> None:
    assert control_size({"k": "\u20ac"}) == len('{"k":""}') + 3


# -- errors ------------------------------------------------------------------------


def test_protocol_error_payload_carries_code_fatal_and_extra_fields() -> None:
    exc = ProtocolError(
        ErrorCode.CHECKSUM_MISMATCH, "mismatch", fatal=False, expected="aa", actual="bb"
    )
    assert exc.payload() == {
        "code": "checksum_mismatch",
        "message": "mismatch",
        "fatal": False,
        "expected": "aa",
        "actual": "bb",
    }
    assert str(exc) == "mismatch"
    assert encode_control(FrameType.ERROR, exc.payload()).startswith(b"\x8f")


def test_bad_frame_helper_is_fatal() -> None:
    exc = bad_frame("nope")
    assert exc.code is ErrorCode.BAD_FRAME
    assert exc.fatal is True
    assert exc.payload() == {"code": "bad_frame", "message": "nope", "fatal": True}


def test_error_codes_are_the_protocol_list() -> None:
    assert {str(c) for c in ErrorCode} == {
        "bad_frame",
        "bad_request",
        "bad_version",
        "bad_key",
        "bad_range",
        "unauthorized",
        "forbidden",
        "not_found",
        "too_large",
        "checksum_mismatch",
        "size_mismatch",
        "corrupt",
        "storage_full",
        "unavailable",
        "busy",
        "timeout",
        "shutting_down",
        "internal",
        "superseded",
        "exists",
    }


def test_list_page_stops_before_the_entry_that_would_overflow_a_control_frame() -> None:
    entries = [{"key": f"k{i:04d}", "pad": "x" * 1000} for i in range(200)]
    page, cursor = list_page(entries, "next-page", "start")
    assert 0 < len(page) < len(entries)
    assert cursor == page[-1]["key"]  # the next page starts after the last one sent
    assert control_size({"files": page, "cursor": "x" * 2048}) <= MAX_CONTROL
    assert list_page(entries[:3], "next-page", "start") == (entries[:3], "next-page")
    assert list_page([{"key": "k", "pad": "x" * MAX_CONTROL}], None, "start") == ([], "start")
