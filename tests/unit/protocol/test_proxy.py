"""protocol/proxy.py: PROXY v1 and v2 headers, read without a byte past their end."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.proxy import (
    V1_MAX,
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    ProxyReader,
    encode_v1,
    encode_v2,
)


def read(stream: bytes) -> tuple[ProxyHeader, bytes]:
    """Feed ``stream`` as a server would: only what wanted() asks; the header and the rest."""
    reader = ProxyReader()
    at = 0
    while reader.header is None:
        want = reader.wanted()
        if at + want > len(stream):
            raise EOFError
        reader.feed(stream[at : at + want])
        at += want
    return reader.header, stream[at:]


FOLLOWING = b"\x09\x00\x00\x00\x02{}"  # a PING frame right behind the header


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 7070\r\n", ("192.0.2.7", 51234)),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 443 7070\r\n", ("2001:db8::7", 443)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None),
        (encode_v2(("192.0.2.7", 51234), ("198.51.100.1", 7070)), ("192.0.2.7", 51234)),
        (encode_v2(("2001:db8::7", 443)), ("2001:db8::7", 443)),
        (encode_v2(None), None),
    ],
    ids=[
        "v1-tcp4",
        "v1-tcp6",
        "v1-unknown",
        "v1-unknown-addresses",
        "v2-tcp4",
        "v2-tcp6",
        "v2-local",
    ],
)
def test_header_then_the_stream_untouched(header: bytes, source: tuple[str, int] | None) -> None:
    parsed, rest = read(header + FOLLOWING)
    assert parsed.source == source
    assert rest == FOLLOWING


def test_v2_tlvs_are_skipped_and_unspec_has_no_source() -> None:
    block = struct.pack("!4s4sHH", bytes([10, 1, 2, 3]), bytes(4), 40000, 7070) + b"\x04\x00\x01x"
    header = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block
    assert read(header + FOLLOWING) == (ProxyHeader(("10.1.2.3", 40000)), FOLLOWING)
    unspec = V2_SIGNATURE + bytes([0x21, 0x00]) + struct.pack("!H", 0)
    assert read(unspec + FOLLOWING) == (ProxyHeader(None), FOLLOWING)


def test_encoders_round_trip() -> None:
    v1 = encode_v1(("203.0.113.9", 1000), ("127.0.0.1", 7070))
    assert v1 == b"PROXY TCP4 203.0.113.9 127.0.0.1 1000 7070\r\n"
    assert read(v1)[0].source == ("203.0.113.9", 1000)


@pytest.mark.parametrize(
    "stream",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no header at all
        b"\x09\x00\x00\x00\x02{}",  # a frame, no header
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",  # families mixed
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"A" * V1_MAX,  # no CRLF within 107 bytes
        V2_SIGNATURE[:6] + b"XXXXXX" + bytes([0x21, 0x11, 0, 12]) + bytes(12),
        V2_SIGNATURE + bytes([0x31, 0x11, 0, 12]) + bytes(12),  # version 3
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12),  # command 2
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4),  # block too short
        V2_SIGNATURE + bytes([0x21, 0x21, 0, 12]) + bytes(12),  # IPv6 block too short
        V2_SIGNATURE + bytes([0x21, 0x12, 0, 12]) + bytes(12),  # UDP
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 65535),  # hostile length
    ],
)
def test_malformed_headers_are_refused(stream: bytes) -> None:
    with pytest.raises(ProxyError):
        read(stream)


def test_a_hostile_v2_length_is_refused_before_its_body() -> None:
    reader = ProxyReader()
    head = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000)
    reader.feed(head[:6])
    with pytest.raises(ProxyError):
        reader.feed(head[6:])


def test_feeding_more_than_wanted_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="wanted"):
        ProxyReader().feed(b"PROXY TCP4")


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_header_or_our_error(stream: bytes) -> None:
    with contextlib.suppress(ProxyError, EOFError):
        read(stream)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_the_v2_signature(tail: bytes) -> None:
    with contextlib.suppress(ProxyError, EOFError):
        read(V2_SIGNATURE + tail)
