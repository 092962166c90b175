"""Unit tests for protocol/decoder.py.

Every decoder case runs twice, whole-buffer and byte-at-a-time (h11's
``t_body_reader``, wsproto's ``_split_frame_test``), and both runs must agree.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.decoder import (
    CLOSED,
    NEED_DATA,
    FrameDecoder,
    Sentinel,
    decode_control,
    decode_digest,
    server_decoder,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    CLIENT_TYPES,
    CONTROL_TYPES,
    HEADER,
    MAX_CONTROL,
    SERVER_TYPES,
    Frame,
    FrameType,
    encode_frame,
)

#: Small DATA limit: keeps byte-at-a-time runs and property tests fast.
MAX_DATA = 64

FAST = settings(max_examples=250)  # the rest comes from the "valise" profile (conftest)


def wire(frame_type: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(frame_type, len(payload)) + payload


def header(frame_type: int, length: int) -> bytes:
    return HEADER.pack(frame_type, length)


# -- the split-feeding helper ----------------------------------------------------


@dataclass
class Outcome:
    frames: list[Frame] = field(default_factory=list)
    #: The last sentinel seen (None when an error ended the run).
    end: Sentinel | None = None
    error: ProtocolError | None = None

    def summary(self) -> tuple[list[Frame], Sentinel | None, tuple[str, bool, str] | None]:
        err = self.error
        return (
            self.frames,
            self.end,
            None if err is None else (str(err.code), err.fatal, err.message),
        )


def run_pieces(
    pieces: list[bytes],
    *,
    eof: bool,
    max_data: int = MAX_DATA,
    accept: frozenset[FrameType] = CLIENT_TYPES,
) -> Outcome:
    """Feed ``pieces`` one by one (then EOF), draining frames after each."""
    decoder = FrameDecoder(max_data=max_data, accept=accept)
    out = Outcome()
    feeds: list[bytes] = [p for p in pieces if p]
    if eof:
        feeds.append(b"")
    try:
        out.end = _drain(decoder, out.frames)
        for piece in feeds:
            decoder.receive_data(piece)
            out.end = _drain(decoder, out.frames)
    except ProtocolError as exc:
        out.error = exc
        out.end = None
    return out


def _drain(decoder: FrameDecoder, frames: list[Frame]) -> Sentinel:
    for _ in range(100_000):
        result = decoder.next_frame()
        if isinstance(result, Sentinel):
            return result
        frames.append(result)
    raise AssertionError("decoder did not reach NEED_DATA or CLOSED")


def decode_both(
    data: bytes,
    *,
    eof: bool = True,
    max_data: int = MAX_DATA,
    accept: frozenset[FrameType] = CLIENT_TYPES,
) -> Outcome:
    """Decode ``data`` whole and byte-at-a-time; both must give the same outcome."""
    whole = run_pieces([data], eof=eof, max_data=max_data, accept=accept)
    split = run_pieces(
        [data[i : i + 1] for i in range(len(data))], eof=eof, max_data=max_data, accept=accept
    )
    assert whole.summary() == split.summary()
    return whole


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *cuts})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def assert_bad_frame(out: Outcome) -> None:
    assert out.error is not None, out
    assert out.error.code is ErrorCode.BAD_FRAME
    assert out.error.fatal is True


# -- happy paths -------------------------------------------------------------------


def test_ping_golden_vector() -> None:
    out = decode_both(b"\x09\x00\x00\x00\x02{}")
    assert out.frames == [Frame(FrameType.PING, b"{}")]
    assert out.end is CLOSED
    assert out.error is None


def test_without_eof_ends_in_need_data() -> None:
    out = decode_both(b"\x09\x00\x00\x00\x02{}", eof=False)
    assert out.frames == [Frame(FrameType.PING, b"{}")]
    assert out.end is NEED_DATA


def test_empty_input() -> None:
    assert decode_both(b"").summary() == ([], CLOSED, None)
    assert decode_both(b"", eof=False).summary() == ([], NEED_DATA, None)


def test_several_frames_in_one_buffer_come_out_in_order() -> None:
    digest = bytes(range(20))
    frames = [
        Frame(FrameType.HELLO, b'{"version":1}'),
        Frame(FrameType.PUT, b'{"key":"k"}'),
        Frame(FrameType.DATA, b"abc"),
        Frame(FrameType.DATA, b""),
        Frame(FrameType.DATA, b"x" * MAX_DATA),
        Frame(FrameType.END, digest),
        Frame(FrameType.END, digest.hex().encode()),
        Frame(FrameType.GET, b""),
        Frame(FrameType.STAT, b"{}"),
        Frame(FrameType.DELETE, b"{}"),
        Frame(FrameType.LIST, b"{}"),
        Frame(FrameType.PING, b"{}"),
        Frame(FrameType.ABORT, b""),
    ]
    data = b"".join(wire(f.type, f.payload) for f in frames)
    out = decode_both(data)
    assert out.error is None
    assert out.frames == frames
    assert out.end is CLOSED


def test_partial_header_needs_data() -> None:
    for n in range(1, 5):
        out = decode_both(b"\x03\x00\x00\x00\x05"[:n], eof=False)
        assert out.summary() == ([], NEED_DATA, None)


def test_partial_payload_needs_data() -> None:
    out = decode_both(wire(FrameType.DATA, b"hello")[:-1], eof=False)
    assert out.summary() == ([], NEED_DATA, None)


def test_zero_length_frame_needs_no_payload() -> None:
    out = decode_both(b"\x03\x00\x00\x00\x00", eof=False)
    assert out.frames == [Frame(FrameType.DATA, b"")]


def test_in_frame_and_buffered_track_partial_frames() -> None:
    decoder = FrameDecoder(max_data=MAX_DATA)
    assert not decoder.in_frame
    assert decoder.buffered == 0
    decoder.receive_data(b"\x03")
    assert decoder.next_frame() is NEED_DATA
    assert decoder.in_frame
    assert decoder.buffered == 1
    decoder.receive_data(b"\x00\x00\x00\x04ab")
    assert decoder.next_frame() is NEED_DATA
    # The header is consumed once validated; only payload bytes stay buffered.
    assert decoder.in_frame
    assert decoder.buffered == 2
    decoder.receive_data(b"cd")
    assert decoder.next_frame() == Frame(FrameType.DATA, b"abcd")
    assert not decoder.in_frame
    assert decoder.buffered == 0
    assert decoder.next_frame() is NEED_DATA


def test_partial_payload_is_what_came_of_a_frame_cut_off_midway() -> None:
    decoder = FrameDecoder(max_data=MAX_DATA)
    decoder.receive_data(b"\x03\x00\x00")
    assert decoder.next_frame() is NEED_DATA
    assert decoder.partial_payload(FrameType.DATA) == b""  # only a header's start
    decoder.receive_data(b"\x00\x04ab")
    assert decoder.next_frame() is NEED_DATA
    assert decoder.partial_payload(FrameType.DATA) == b"ab"
    assert decoder.partial_payload(FrameType.END) == b""  # another type
    decoder.receive_data(b"")
    with pytest.raises(ProtocolError):
        decoder.next_frame()  # EOF in the middle of the frame
    assert decoder.partial_payload(FrameType.DATA) == b"ab"  # still there after the error


def test_partial_payload_of_a_complete_frame_is_empty() -> None:
    decoder = FrameDecoder(max_data=MAX_DATA)
    decoder.receive_data(wire(FrameType.DATA, b"abcd") + b"\x03")
    assert decoder.next_frame() == Frame(FrameType.DATA, b"abcd")
    assert decoder.partial_payload(FrameType.DATA) == b""


def test_receive_after_eof_is_a_caller_bug() -> None:
    decoder = FrameDecoder(max_data=MAX_DATA)
    decoder.receive_data(b"")
    with pytest.raises(RuntimeError):
        decoder.receive_data(b"x")


# -- lengths checked from the header -----------------------------------------------


def test_huge_data_length_rejected_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_data=1024 * 1024)
    decoder.receive_data(b"\x03\xff\xff\xff\xff")
    with pytest.raises(ProtocolError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.BAD_FRAME
    assert info.value.fatal is True
    assert decoder.buffered <= 5


def test_huge_data_length_byte_at_a_time() -> None:
    out = decode_both(b"\x03\xff\xff\xff\xff" + b"x" * 100, eof=False)
    assert_bad_frame(out)
    assert out.frames == []


def test_data_exactly_max_data_is_accepted() -> None:
    out = decode_both(wire(FrameType.DATA, b"d" * MAX_DATA))
    assert out.frames == [Frame(FrameType.DATA, b"d" * MAX_DATA)]
    assert out.end is CLOSED


def test_data_one_over_max_data_is_rejected_before_the_payload() -> None:
    decoder = FrameDecoder(max_data=MAX_DATA)
    decoder.receive_data(header(FrameType.DATA, MAX_DATA + 1))
    with pytest.raises(ProtocolError) as info:
        decoder.next_frame()
    assert info.value.code is ErrorCode.BAD_FRAME
    assert_bad_frame(decode_both(wire(FrameType.DATA, b"d" * (MAX_DATA + 1))))


@pytest.mark.parametrize("frame_type", sorted(CONTROL_TYPES & CLIENT_TYPES))
def test_control_exactly_64_kib_is_accepted(frame_type: FrameType) -> None:
    payload = b" " * (MAX_CONTROL - 2) + b"{}"
    out = run_pieces([wire(frame_type, payload)], eof=True)
    assert out.frames == [Frame(frame_type, payload)]


@pytest.mark.parametrize("frame_type", sorted(CONTROL_TYPES & CLIENT_TYPES))
def test_control_over_64_kib_is_rejected_from_the_header(frame_type: FrameType) -> None:
    out = decode_both(header(frame_type, MAX_CONTROL + 1), eof=False)
    assert_bad_frame(out)


def test_control_limit_does_not_depend_on_max_data() -> None:
    # A large DATA limit does not raise the control limit, nor the reverse.
    out = decode_both(header(FrameType.PING, MAX_CONTROL + 1), eof=False, max_data=10 * MAX_CONTROL)
    assert_bad_frame(out)
    out = decode_both(wire(FrameType.PING, b"{}" + b" " * 100), max_data=10)
    assert out.error is None
    assert len(out.frames) == 1


@pytest.mark.parametrize("length", [20, 40])
def test_end_digest_lengths_accepted(length: int) -> None:
    out = decode_both(wire(FrameType.END, b"0" * length))
    assert out.frames == [Frame(FrameType.END, b"0" * length)]


@pytest.mark.parametrize("length", [0, 1, 19, 21, 32, 39, 41, 64, 0xFFFFFFFF])
def test_end_other_lengths_rejected_from_the_header(length: int) -> None:
    out = decode_both(header(FrameType.END, length), eof=False)
    assert_bad_frame(out)


# -- frame types ---------------------------------------------------------------------


@pytest.mark.parametrize("type_byte", [0x00, 0x0D, 0x0E, 0x10, 0x7F, 0x82, 0x8E, 0x90, 0xFF])
def test_unknown_type_bytes_are_bad_frame(type_byte: int) -> None:
    out = decode_both(wire(type_byte, b"{}"))
    assert_bad_frame(out)
    assert out.frames == []


@pytest.mark.parametrize("frame_type", [FrameType.OK, FrameType.ERROR])
def test_server_types_from_a_client_are_bad_frame(frame_type: FrameType) -> None:
    out = decode_both(wire(frame_type, b"{}"))
    assert_bad_frame(out)


@pytest.mark.parametrize("frame_type", sorted(CLIENT_TYPES - SERVER_TYPES))
def test_server_decoder_rejects_client_only_types(frame_type: FrameType) -> None:
    out = decode_both(wire(frame_type, b"{}"), accept=SERVER_TYPES)
    assert_bad_frame(out)


def test_server_decoder_accepts_server_types() -> None:
    frames = [
        Frame(FrameType.OK, b"{}"),
        Frame(FrameType.DATA, b"x" * 10),
        Frame(FrameType.END, b"\x00" * 20),
        Frame(FrameType.ERROR, b'{"code":"busy"}'),
    ]
    data = b"".join(wire(f.type, f.payload) for f in frames)
    decoder = server_decoder(max_data=10)
    decoder.receive_data(data)
    got = [decoder.next_frame() for _ in frames]
    assert got == frames
    assert decoder.next_frame() is NEED_DATA


def test_frames_before_an_error_are_delivered() -> None:
    out = decode_both(wire(FrameType.PING, b"{}") + wire(0x42, b"") + wire(FrameType.PING, b"{}"))
    assert out.frames == [Frame(FrameType.PING, b"{}")]
    assert_bad_frame(out)


# -- end of input ----------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 6, 8])
def test_eof_mid_frame_is_bad_frame(cut: int) -> None:
    out = decode_both(wire(FrameType.DATA, b"abcd")[:cut])
    assert_bad_frame(out)
    assert out.frames == []


def test_eof_at_a_frame_boundary_is_closed() -> None:
    out = decode_both(wire(FrameType.DATA, b"abcd") + wire(FrameType.PING))
    assert out.summary() == (
        [Frame(FrameType.DATA, b"abcd"), Frame(FrameType.PING, b"")],
        CLOSED,
        None,
    )


def test_closed_is_repeated() -> None:
    decoder = FrameDecoder(max_data=MAX_DATA)
    decoder.receive_data(b"")
    assert decoder.next_frame() is CLOSED
    assert decoder.next_frame() is CLOSED


# -- decode_control ------------------------------------------------------------------


@pytest.mark.parametrize("frame_type", sorted(CONTROL_TYPES))
def test_decode_control_empty_payload_is_empty_object(frame_type: FrameType) -> None:
    assert decode_control(Frame(frame_type, b"")) == {}


def test_decode_control_object() -> None:
    frame = Frame(FrameType.PUT, '{"key": "\u00e9", "size": 3, "x": [1]}'.encode())
    assert decode_control(frame) == {"key": "\u00e9", "size": 3, "x": [1]}


@pytest.mark.parametrize(
    "payload",
    [
        b"{",
        b"not json",
        b"[]",
        b"[1, 2]",
        b"1",
        b"1.5",
        b'"text"',
        b"null",
        b"true",
        b'{"a": "\xff"}',
        b"\xff\xfe{}",
        b'{"a": 1}{"b": 2}',
        b"{'a': 1}",
    ],
)
def test_decode_control_rejects_non_objects(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_control(Frame(FrameType.PING, payload))
    assert info.value.code is ErrorCode.BAD_FRAME
    assert info.value.fatal is True


@pytest.mark.parametrize("frame_type", [FrameType.DATA, FrameType.END])
def test_decode_control_rejects_non_control_frames(frame_type: FrameType) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_control(Frame(frame_type, b"{}"))
    assert info.value.code is ErrorCode.BAD_FRAME


def test_decode_control_deeply_nested_json_is_bad_frame() -> None:
    # Regression: json.loads raises RecursionError (not ValueError) on deep
    # nesting; it must come out as bad_frame like any other bad payload.
    payload = b'{"a":' + b"[" * (MAX_CONTROL - 6) + b"}"
    assert len(payload) == MAX_CONTROL
    with pytest.raises(ProtocolError) as info:
        decode_control(Frame(FrameType.PING, payload))
    assert info.value.code is ErrorCode.BAD_FRAME


# -- decode_digest -------------------------------------------------------------------

DIGEST = bytes.fromhex("a9993e364706816aba3e25717850c26c9cd0d89d")


@pytest.mark.parametrize(
    "payload",
    [
        DIGEST,
        DIGEST.hex().encode(),
        DIGEST.hex().upper().encode(),
        b"A9993e364706816ABA3E25717850c26c9cd0d89d",
    ],
)
def test_decode_digest_spellings(payload: bytes) -> None:
    assert decode_digest(payload) == DIGEST


def test_decode_digest_raw_bytes_are_taken_as_is() -> None:
    # 20 bytes that happen to be ASCII hex digits are still a raw digest.
    assert decode_digest(b"0" * 20) == b"0" * 20


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        DIGEST[:19],
        DIGEST + b"\x00",
        DIGEST.hex().encode()[:39],
        DIGEST.hex().encode() + b"0",
        b"ab " * 13 + b"a",
        b" " + DIGEST.hex().encode()[:39],
        DIGEST.hex().encode()[:38] + b"\n\n",
        b"zz" * 20,
        b"0x" + DIGEST.hex().encode()[:38],
        b"\xff" * 40,
        "\u00e9".encode() * 20,
    ],
)
def test_decode_digest_rejects(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_digest(payload)
    assert info.value.code is ErrorCode.BAD_FRAME
    assert info.value.fatal is True


# -- properties --------------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def client_frames(draw: st.DrawFn) -> Frame:
    """One valid client frame, within the limits."""
    frame_type = draw(st.sampled_from(sorted(CLIENT_TYPES)))
    if frame_type is FrameType.DATA:
        payload = draw(st.binary(max_size=MAX_DATA))
    elif frame_type is FrameType.END:
        digest = draw(st.binary(min_size=20, max_size=20))
        payload = draw(
            st.sampled_from([digest, digest.hex().encode(), digest.hex().upper().encode()])
        )
    else:
        obj = draw(st.dictionaries(st.text(max_size=6), json_value, max_size=4))
        payload = b"" if not obj and draw(st.booleans()) else json.dumps(obj).encode()
    return Frame(frame_type, payload)


@FAST
@given(frames=st.lists(client_frames(), max_size=8), data=st.data())
def test_decode_of_encode_is_identity_under_any_split(
    frames: list[Frame], data: st.DataObject
) -> None:
    encoded = b"".join(b"".join(encode_frame(f.type, f.payload)) for f in frames)
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=12))
    out = run_pieces(split_at(encoded, cuts), eof=True)
    assert out.error is None
    assert out.frames == frames
    assert out.end is CLOSED
    for frame in out.frames:
        if frame.type in CONTROL_TYPES:
            assert isinstance(decode_control(frame), dict)
        elif frame.type is FrameType.END:
            assert len(decode_digest(frame.payload)) == 20


@st.composite
def noisy_chunks(draw: st.DrawFn) -> bytes:
    """Raw noise, or a plausible header (any type, edge-case length) plus noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=16))
    type_byte = draw(st.sampled_from([*range(0x0C), 0x7F, 0x80, 0x8F, 0xFF]))
    length = draw(
        st.integers(0, 80) | st.sampled_from([20, 40, MAX_DATA, MAX_DATA + 1, 0xFFFFFFFF])
    )
    body = draw(st.binary(max_size=80))
    return header(type_byte, length) + body


@FAST
@given(
    chunks=st.lists(noisy_chunks(), max_size=8),
    data=st.data(),
    eof=st.booleans(),
    accept=st.sampled_from([CLIENT_TYPES, SERVER_TYPES]),
)
def test_arbitrary_bytes_give_frames_or_protocol_error(
    chunks: list[bytes], data: st.DataObject, eof: bool, accept: frozenset[FrameType]
) -> None:
    blob = b"".join(chunks)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=12))
    # run_pieces lets only ProtocolError through as an outcome; anything else fails here.
    out = run_pieces(split_at(blob, cuts), eof=eof, accept=accept)
    whole = run_pieces([blob], eof=eof, accept=accept)
    assert out.summary() == whole.summary()
    if out.error is not None:
        assert out.error.code is ErrorCode.BAD_FRAME
        assert out.error.fatal is True
    else:
        assert out.end is (CLOSED if eof else NEED_DATA)
    for frame in out.frames:
        assert frame.type in accept
        limit = MAX_DATA if frame.type is FrameType.DATA else MAX_CONTROL
        assert len(frame.payload) <= limit
        if frame.type is FrameType.END:
            assert len(frame.payload) in (20, 40)


@FAST
@given(frames=st.lists(client_frames(), max_size=8), data=st.data())
def test_next_raw_gives_what_next_frame_gives(frames: list[Frame], data: st.DataObject) -> None:
    """The server's tuple path: the same types and payloads, in order, under any split."""
    encoded = b"".join(b"".join(encode_frame(f.type, f.payload)) for f in frames)
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=12))
    decoder = FrameDecoder(max_data=MAX_DATA)
    raws: list[tuple[FrameType, bytes]] = []
    for piece in [*split_at(encoded, cuts), b""]:
        decoder.receive_data(piece)
        while not isinstance(raw := decoder.next_raw(), Sentinel):
            assert type(raw[0]) is FrameType
            assert type(raw[1]) is bytes
            raws.append(raw)
    assert raw is CLOSED
    assert raws == [(f.type, f.payload) for f in frames]
