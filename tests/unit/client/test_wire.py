"""Unit tests for client/wire.py: the sans-IO codec, whole, split and through its own buffer."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import errors, wire
from client.wire import (
    CLIENT_FRAMES,
    HEADER,
    MAX_CONTROL,
    NEED_DATA,
    SERVER_FRAMES,
    Frame,
    FrameDecoder,
    FrameType,
    encode_control,
    encode_data,
    encode_end,
    encode_frame,
    parse_digest,
)
from tests.unit.client.frames import RECEIVED, RECEIVED_BYTES, SHA_EMPTY, join, pattern


def decode_all(data: bytes, *, step: int | None = None, **kw: Any) -> list[Frame]:
    """Feed ``data`` whole (step None) or ``step`` bytes at a time; collect frames."""
    decoder = FrameDecoder(**kw)
    frames: list[Frame] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        decoder.receive_data(piece)
        while (frame := decoder.next_frame()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            frames.append(frame)
    assert decoder.buffered == 0
    return frames


@pytest.fixture(params=[None, 1, 7], ids=["whole", "byte-at-a-time", "7-bytes"])
def step(request: pytest.FixtureRequest) -> int | None:
    value: int | None = request.param
    return value


# -- encoding ------------------------------------------------------------------


def test_header_layout() -> None:
    assert join(encode_control(FrameType.PING, {})) == b"\x09\x00\x00\x00\x02{}"
    assert join(encode_data(b"abc")) == b"\x03\x00\x00\x00\x03abc"
    assert HEADER.size == 5


def test_encoder_does_not_join_payload() -> None:
    chunk = b"x" * 100_000
    header, payload = encode_data(chunk)
    assert payload is chunk
    assert header == b"\x03" + (100_000).to_bytes(4, "big")


def test_end_raw_and_hex() -> None:
    assert join(encode_end(SHA_EMPTY))[5:] == SHA_EMPTY
    hex_end = join(encode_end(SHA_EMPTY, hex_digest=True))
    assert hex_end[:5] == b"\x04\x00\x00\x00\x28"
    assert hex_end[5:] == SHA_EMPTY.hex().encode()
    with pytest.raises(ValueError, match="20-byte"):
        encode_end(b"short")


def test_control_limits() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_control(FrameType.PING, {"x": "y" * MAX_CONTROL})
    with pytest.raises(ValueError, match="not a control"):
        encode_control(FrameType.DATA, {})
    with pytest.raises(ValueError, match="END"):
        encode_frame(FrameType.END, b"x" * 21)


def test_control_is_utf8_json() -> None:
    payload = join(encode_control(FrameType.STAT, {"key": "scans/é.nii"}))[5:]
    assert json.loads(payload.decode("utf-8")) == {"key": "scans/é.nii"}


# -- decoding ------------------------------------------------------------------


def test_roundtrip_server_frames(step: int | None) -> None:
    data = join(
        encode_control(FrameType.OK, {"length": 3})
        + encode_data(b"abc")
        + encode_data(b"")
        + encode_end(hashlib.sha1(b"abc").digest())
        + encode_end(SHA_EMPTY, hex_digest=True)
        + encode_frame(FrameType.ERROR, b"")
    )
    frames = decode_all(data, step=step)
    assert [f.type for f in frames] == [
        FrameType.OK,
        FrameType.DATA,
        FrameType.DATA,
        FrameType.END,
        FrameType.END,
        FrameType.ERROR,
    ]
    assert frames[0].json() == {"length": 3}
    assert frames[1].payload == b"abc"
    assert frames[2].payload == b""
    assert frames[3].digest() == hashlib.sha1(b"abc").digest()
    assert frames[4].digest() == SHA_EMPTY
    assert frames[5].json() == {}


def test_next_data_lends_data_payloads_and_copies_the_rest() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(
        join(
            encode_control(FrameType.OK, {"length": 6})
            + encode_data(b"abc")
            + encode_data(b"def")
            + encode_end(hashlib.sha1(b"abcdef").digest())
        )
    )
    reply = decoder.next_data()
    assert isinstance(reply, wire.Frame) and reply.json() == {"length": 6}
    first = decoder.next_data()
    assert isinstance(first, memoryview) and first.tobytes() == b"abc"
    # next_frame still hands out a copy of its own.
    second = decoder.next_frame()
    assert isinstance(second, wire.Frame) and type(second.payload) is bytes
    assert second.payload == b"def"
    end = decoder.next_data()
    assert isinstance(end, wire.Frame) and end.type is FrameType.END
    assert decoder.next_data() is wire.NEED_DATA


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (HEADER.pack(0x42, 0), "unknown frame type"),
        (HEADER.pack(FrameType.PUT, 2), "unexpected PUT"),
        (HEADER.pack(FrameType.OK, MAX_CONTROL + 1), "exceeds"),
        (HEADER.pack(FrameType.ERROR, 0xFFFFFFFF), "exceeds"),
        (HEADER.pack(FrameType.DATA, 1025), "exceeds 1024"),
        (HEADER.pack(FrameType.END, 21), "20 or 40"),
        (HEADER.pack(FrameType.END, 0), "20 or 40"),
    ],
)
def test_bad_header_rejected_before_payload(header: bytes, match: str, step: int | None) -> None:
    decoder = FrameDecoder(max_data=1024)
    pieces = [header] if step is None else [header[i : i + step] for i in range(len(header))]
    with pytest.raises(errors.ProtocolError, match=match):  # noqa: PT012
        for piece in pieces:
            decoder.receive_data(piece)
            assert decoder.next_frame() is NEED_DATA
    # The decoder stays broken.
    with pytest.raises(errors.ProtocolError):
        decoder.next_frame()


def test_limits_at_the_edge() -> None:
    ok = join(encode_frame(FrameType.OK, b"{" + b" " * (MAX_CONTROL - 2) + b"}"))
    assert decode_all(ok)[0].json() == {}
    data = join(encode_data(b"x" * 1024))
    assert decode_all(data, max_data=1024)[0].payload == b"x" * 1024


def test_client_frames_allowed_when_asked(step: int | None) -> None:
    data = join(encode_control(FrameType.PUT, {"key": "k"}) + encode_end(SHA_EMPTY))
    frames = decode_all(data, step=step, allowed=CLIENT_FRAMES)
    assert [f.type for f in frames] == [FrameType.PUT, FrameType.END]


def test_need_data_until_complete() -> None:
    data = join(encode_data(b"hello"))
    decoder = FrameDecoder()
    for i, byte in enumerate(data):
        decoder.receive_data(bytes([byte]))
        result = decoder.next_frame()
        if i < len(data) - 1:
            assert result is NEED_DATA
            assert decoder.buffered == i + 1
    assert result == Frame(FrameType.DATA, b"hello")


@pytest.mark.parametrize("payload", [b"[1]", b"nope", b"\xff\xfe", b'"s"', b"null"])
def test_control_payload_must_be_object(payload: bytes) -> None:
    with pytest.raises(errors.ProtocolError):
        Frame(FrameType.OK, payload).json()


def test_parse_digest() -> None:
    digest = hashlib.sha1(b"x").digest()
    assert parse_digest(digest) == digest
    assert parse_digest(digest.hex().encode()) == digest
    assert parse_digest(digest.hex().upper().encode()) == digest
    with pytest.raises(errors.ProtocolError):
        parse_digest(b"g" * 40)
    with pytest.raises(errors.ProtocolError):
        parse_digest(b"x" * 39)


frame_strategy = st.one_of(
    st.builds(
        lambda t, d: Frame(t, json.dumps(d).encode()),
        st.sampled_from([FrameType.OK, FrameType.ERROR]),
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
    ),
    st.builds(lambda b: Frame(FrameType.DATA, b), st.binary(max_size=300)),
    st.builds(lambda b: Frame(FrameType.END, b), st.binary(min_size=20, max_size=20)),
)


@given(frames=st.lists(frame_strategy, max_size=8), cuts=st.lists(st.integers(0, 4000)))
def test_roundtrip_any_split(frames: list[Frame], cuts: list[int]) -> None:
    data = b"".join(join(encode_frame(f.type, f.payload)) for f in frames)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    decoder = FrameDecoder()
    out: list[Frame] = []
    for lo, hi in itertools.pairwise(bounds):
        decoder.receive_data(data[lo:hi])
        while (frame := decoder.next_frame()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            out.append(frame)
    assert out == frames


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_frames_or_protocol_error(data: bytes) -> None:
    decoder = FrameDecoder(max_data=64)
    decoder.receive_data(data)
    try:
        while (frame := decoder.next_frame()) is not NEED_DATA:
            assert isinstance(frame, Frame)
            assert frame.type in SERVER_FRAMES
            if frame.type in (FrameType.OK, FrameType.ERROR):
                frame.json()
    except errors.ProtocolError:
        pass


# -- receive path: bytes straight into the decoder's own buffer ----------------


def _pour(decoder: FrameDecoder, data: bytes, frames: list[Frame], most: int) -> None:
    """Deliver ``data`` as a transport does: into get_buffer() views, ``most`` bytes a read."""
    view = memoryview(data)
    while view:
        buf = decoder.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), len(view), most)
        buf[:n] = view[:n]
        decoder.buffer_updated(n)
        view = view[n:]
    _take(decoder, frames)


def _take(decoder: FrameDecoder, frames: list[Frame]) -> None:
    while True:
        ready = decoder.ready
        frame = decoder.next_frame()
        if frame is NEED_DATA:
            return
        # A reader sleeps while ready is false: it must never miss a frame.
        assert ready
        assert isinstance(frame, Frame)
        frames.append(frame)


@pytest.mark.usefixtures("small_buffers")
@pytest.mark.parametrize("most", [1, 3, 64, 1 << 20])
def test_buffer_path_split_at_every_position(most: int) -> None:
    for cut in range(len(RECEIVED_BYTES) + 1):
        decoder = FrameDecoder()
        frames: list[Frame] = []
        _pour(decoder, RECEIVED_BYTES[:cut], frames, most)
        _pour(decoder, RECEIVED_BYTES[cut:], frames, most)
        assert frames == RECEIVED, f"split at {cut}"
        assert decoder.buffered == 0
        assert not decoder.ready
        # All taken: the whole buffer is free again, nothing left to move.
        assert len(decoder.get_buffer()) == decoder.capacity


@pytest.mark.usefixtures("small_buffers")
def test_buffer_path_and_receive_data_mix_at_every_position() -> None:
    for cut in range(len(RECEIVED_BYTES) + 1):
        decoder = FrameDecoder()
        frames: list[Frame] = []
        decoder.receive_data(RECEIVED_BYTES[:cut])
        _pour(decoder, RECEIVED_BYTES[cut:], frames, 5)
        assert frames == RECEIVED, f"split at {cut}"


@given(cuts=st.lists(st.integers(0, len(RECEIVED_BYTES)), max_size=6), most=st.integers(1, 300))
def test_buffer_path_any_splits(cuts: list[int], most: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wire, "_MIN_BUFFER", 16)
        mp.setattr(wire, "_MIN_FREE", 8)
        mp.setattr(wire, "_MAX_SLACK", 96)
        decoder = FrameDecoder()
        frames: list[Frame] = []
        bounds = sorted({0, len(RECEIVED_BYTES), *cuts})
        for lo, hi in itertools.pairwise(bounds):
            _pour(decoder, RECEIVED_BYTES[lo:hi], frames, most)
        assert frames == RECEIVED


@pytest.mark.usefixtures("small_buffers")
def test_buffer_makes_room_for_the_whole_payload() -> None:
    decoder = FrameDecoder()
    data = join(encode_data(pattern(250, 4)))
    frames: list[Frame] = []
    _pour(decoder, data[:15], frames, 1 << 20)
    assert frames == []
    assert decoder.next_frame() is NEED_DATA
    # The header is known: one read can bring the rest of the payload in one piece.
    assert len(decoder.get_buffer()) >= 250 - 10
    _pour(decoder, data[15:], frames, 1 << 20)
    assert frames == [Frame(FrameType.DATA, pattern(250, 4))]


@pytest.mark.usefixtures("small_buffers")
def test_buffer_shrinks_back_after_a_transfer() -> None:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    first = decoder.capacity
    _pour(decoder, join(encode_data(pattern(250, 6))), frames, 1 << 20)
    assert decoder.capacity > first
    _pour(decoder, join(encode_end(SHA_EMPTY)), frames, 1 << 20)
    assert [f.type for f in frames] == [FrameType.DATA, FrameType.END]
    assert decoder.capacity == first


def test_hostile_length_is_refused_before_the_buffer_grows() -> None:
    decoder = FrameDecoder(max_data=1024)
    before = decoder.capacity
    frames: list[Frame] = []
    with pytest.raises(errors.ProtocolError, match="exceeds"):
        _pour(decoder, HEADER.pack(FrameType.DATA, 0xFFFFFFFF), frames, 5)
    decoder.get_buffer()
    assert decoder.capacity == before
    with pytest.raises(ValueError, match="beyond"):
        decoder.buffer_updated(before + 1)
