"""Unit tests for protocol/compact_json.py: the bytes and values the stdlib gives.

What a client sees (replies, LIST pages, change events) and what older
servers stored must not move by a byte when orjson writes and reads them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import compact_json
from protocol.decoder import decode_control
from protocol.frames import HEADER_SIZE, Frame, FrameType, encode_control
from storage.info import FileInfo


def stdlib(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


#: Epoch seconds as time.time() gives them: what file info and replies carry.
EPOCH = st.floats(min_value=1e9, max_value=4e9)
SCALARS = st.none() | st.booleans() | st.integers() | EPOCH | st.text()
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(st.dictionaries(st.text(), VALUES, max_size=6))
def test_dumps_is_the_stdlib_bytes_or_its_error(obj: dict[str, Any]) -> None:
    # st.text() draws lone surrogates and st.integers() ints past 64 bits.
    try:
        expected: bytes | type[Exception] = stdlib(obj)
    except UnicodeEncodeError:
        expected = UnicodeEncodeError
    try:
        got: bytes | type[Exception] = compact_json.dumps(obj)
    except UnicodeEncodeError:
        got = UnicodeEncodeError
    assert got == expected
    if expected is not UnicodeEncodeError:
        assert compact_json.dumps_str(obj) == stdlib(obj).decode()


@settings(max_examples=300)
@given(VALUES)
def test_loads_gives_the_stdlib_value_and_types(value: Any) -> None:
    text = json.dumps(value)  # ASCII: lone surrogates as \ud800 escapes
    got = compact_json.loads(text)
    assert got == json.loads(text)
    assert repr(got) == repr(json.loads(text))  # 2**70 stays an int, not 1.18e21
    assert repr(compact_json.loads(text.encode())) == repr(got)


def test_a_reply_with_non_ascii_and_epoch_floats_is_the_stdlib_bytes() -> None:
    info = FileInfo(
        key="scans/\u00e9t\u00e9/\U0001f9e0.nii",
        size=4096,
        sha1="a" * 40,
        content_type="application/x-n\u00effti",
        chunk_size=1 << 20,
        chunks=1,
        created_at=1764781695.123456,
        expires_at=1764785295.1,
        vid="v1",
    )
    reply = {**info.wire(), "offset": 0, "length": 4096}
    frame = encode_control(FrameType.OK, reply)
    assert frame[HEADER_SIZE:] == stdlib(reply)
    stored = {name: value for name, value in info.wire().items() if name != "version"}
    assert info.dumps() == stdlib({**stored, "vid": "v1", "check": "sha1"}).decode()


def test_a_lone_surrogate_in_a_reply_goes_out_as_an_escape() -> None:
    frame = encode_control(FrameType.OK, {"key": "a\ud800", "n": 1})
    assert frame[HEADER_SIZE:] == b'{"key":"a\\ud800","n":1}'


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # orjson would read it as a float; a request field must stay an int.
        (b'{"size":123456789012345678901234567890}', {"size": 123456789012345678901234567890}),
        # orjson refuses a lone surrogate; the stdlib reads it and requests.py says BAD_KEY.
        (b'{"key":"\\ud800"}', {"key": "\ud800"}),
        (b'{"ttl":NaN}', {"ttl": float("nan")}),
    ],
)
def test_decode_control_reads_what_the_stdlib_reads(payload: bytes, expected: Any) -> None:
    got = decode_control(Frame(FrameType.PUT, payload))
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "text",
    [
        "9223372036854775807",
        "9223372036854775808",  # within u64: orjson keeps the int
        "18446744073709551616",  # past 64 bits: orjson's float is not taken
        "-9223372036854775809",
        '{"a":[1,{"b":[123456789012345678901234]}]}',  # found however deep it sits
        "[" * 200 + "-18446744073709551617" + "]" * 200,
        '{"key":"12345678901234567890123","n":1.2345678901234567890123e5}',
        "1e300",
        "-1e300",
    ],
)
def test_integers_past_64_bits_anywhere_stay_ints(text: str) -> None:
    assert repr(compact_json.loads(text)) == repr(json.loads(text))
    assert repr(compact_json.loads(text.encode())) == repr(json.loads(text))
