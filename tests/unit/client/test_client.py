"""Unit tests of the client package: codec, error mapping, files, CLI helpers. No sockets."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import errors, wire
from client.aio import AsyncClient
from client.cli import exit_code_for, human_bytes, parse_server
from client.connection import Connection, _FrameProtocol
from client.files import Sink, Source
from client.nctools import decode_stream
from client.transfer import verify_download
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
from protocol.errors import ErrorCode

ALL = frozenset(FrameType)
SHA_EMPTY = hashlib.sha1(b"").digest()


def join(parts: list[Any]) -> bytes:
    return b"".join(bytes(p) for p in parts)


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


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
def test_every_wire_code_has_a_class(code: str) -> None:
    exc = errors.error_from_wire({"code": code, "message": "m", "fatal": False})
    assert type(exc) is errors.ERRORS_BY_CODE[code]
    assert type(exc) is not errors.ValiseError
    assert (exc.code, exc.message, exc.fatal) == (code, "m", False)


def test_client_knows_exactly_the_server_codes() -> None:
    # protocol.errors.ErrorCode is what the server sends; a class for a code it
    # no longer has, or a code without a class, is a disagreement.
    assert set(errors.ERRORS_BY_CODE) == {c.value for c in ErrorCode}
    for code, cls in errors.ERRORS_BY_CODE.items():
        assert cls.default_code == code


def test_error_fields_and_families() -> None:
    exc = errors.error_from_wire(
        {
            "code": "checksum_mismatch",
            "message": "m",
            "fatal": False,
            "expected": "a",
            "actual": "b",
        }
    )
    assert isinstance(exc, errors.ChecksumMismatch)
    assert isinstance(exc, errors.IntegrityError)
    assert exc.fields == {"expected": "a", "actual": "b"}
    assert isinstance(errors.error_from_wire({"code": "busy"}), errors.TransientError)
    assert isinstance(errors.error_from_wire({"code": "corrupt"}), errors.IntegrityError)
    assert not isinstance(errors.error_from_wire({"code": "not_found"}), errors.TransientError)


def test_unknown_or_malformed_error() -> None:
    exc = errors.error_from_wire({"code": "brand_new", "message": 3})
    assert type(exc) is errors.ValiseError
    assert exc.code == "brand_new"
    assert exc.message == ""
    assert exc.fatal is True  # no fatal flag: reconnect to be safe
    assert errors.error_from_wire({}).code == "unknown"


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


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"


# -- download verification -----------------------------------------------------


def _info(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha1": hashlib.sha1(data).hexdigest(), "length": len(data)}


def test_verify_download_accepts_good_stream() -> None:
    data = b"brain"
    digest = hashlib.sha1(data).digest()
    verify_download(_info(data), {"key": "k"}, len(data), len(data), digest, digest)


def test_verify_download_rejects_digest_mismatch() -> None:
    digest = hashlib.sha1(b"brain").digest()
    with pytest.raises(errors.IntegrityError, match="does not match END") as info:
        verify_download(_info(b"brain"), {"key": "k"}, 5, 5, SHA_EMPTY, digest)
    assert info.value.fields["expected"] == digest.hex()


def test_verify_download_rejects_short_stream() -> None:
    digest = hashlib.sha1(b"bra").digest()
    with pytest.raises(errors.IntegrityError, match="after 3 of 5"):
        verify_download(_info(b"brain"), {"key": "k"}, 3, 5, digest, digest)


def test_verify_download_whole_file_checks_stored_sha1() -> None:
    other = hashlib.sha1(b"other").digest()
    info = _info(b"brain")
    with pytest.raises(errors.IntegrityError, match="stored sha1"):
        verify_download(info, {"key": "k"}, 5, 5, other, other)
    # A range of the middle is not compared with the whole-file digest.
    verify_download(info, {"key": "k", "offset": 1}, 5, 5, other, other)


# -- files -----------------------------------------------------------------------


def test_sink_path_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "scan.nii"
    target.write_bytes(b"old")
    sink = Sink(target)
    sink.start()
    sink.write(b"new bytes")
    assert target.read_bytes() == b"old"
    sink.abort()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["scan.nii"]
    sink.start()
    sink.write(b"new bytes")
    sink.commit()
    assert target.read_bytes() == b"new bytes"
    assert os.listdir(tmp_path) == ["scan.nii"]


def test_sink_stream_restartable_until_written() -> None:
    out = io.BytesIO()
    sink = Sink(out)
    sink.start()
    assert sink.restartable
    sink.write(b"x")
    assert not sink.restartable
    sink.commit()
    assert out.getvalue() == b"x"


def _drain(src: Source, size: int) -> bytes:
    parts = []
    while chunk := src.read(size):
        parts.append(bytes(chunk))
    return b"".join(parts)


def test_source_kinds(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    for source in (path, str(path), b"0123456789", bytearray(b"0123456789")):
        src = Source(source)
        assert src.rereadable
        assert src.start() == 10
        assert _drain(src, 3) == b"0123456789"
        assert src.start() == 10  # again, for a retry
        assert _drain(src, 4) == b"0123456789"
        src.close()
    stream = Source(io.BytesIO(b"abc"))
    assert not stream.rereadable
    assert stream.start() is None
    assert not stream.consumed
    assert _drain(stream, 2) == b"abc"
    assert stream.consumed
    with pytest.raises(RuntimeError):
        stream.start()


# -- nc helpers ------------------------------------------------------------------


def _decode(data: bytes, **kw: Any) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = decode_stream(io.BytesIO(data), out, **kw)
    return code, out.getvalue().splitlines()


def test_decode_reports_matching_end() -> None:
    data = join(
        encode_control(FrameType.OK, {"length": 4})
        + encode_data(b"ab")
        + encode_data(b"cd")
        + encode_end(hashlib.sha1(b"abcd").digest())
    )
    code, lines = _decode(data)
    assert code == 0
    assert lines[1] == "DATA 2 bytes (2 so far)"
    assert "matches SHA-1 of the 4 DATA bytes" in lines[-1]


def test_decode_reports_mismatch_and_truncation() -> None:
    data = join(encode_control(FrameType.OK, {}) + encode_data(b"ab") + encode_end(SHA_EMPTY))
    code, lines = _decode(data)
    assert code == 4
    assert "MISMATCH" in lines[-1]
    code, _ = _decode(data[:-3])
    assert code == 1
    code, _ = _decode(HEADER.pack(0x55, 0))
    assert code == 1


def test_decode_json_and_data_out() -> None:
    sink = io.BytesIO()
    data = join(encode_control(FrameType.OK, {"length": 1}) + encode_data(b"z"))
    data += join(encode_end(hashlib.sha1(b"z").digest(), hex_digest=True))
    code, lines = _decode(data, as_json=True, data_out=sink)
    assert code == 0
    assert [json.loads(line)["type"] for line in lines] == ["OK", "DATA", "END"]
    assert json.loads(lines[-1])["match"] is True
    assert sink.getvalue() == b"z"


# -- retries (a scripted connection instead of a socket) -------------------------


class ScriptedConnection:
    """Stands in for Connection: each read_reply() pops the next scripted outcome."""

    def __init__(self, script: Iterator[dict[str, Any] | errors.ValiseError]) -> None:
        self.script = script
        self.closed = False
        self.hello_reply: dict[str, Any] | None = {"max_frame": 1 << 20}
        self.sent: list[tuple[FrameType, Any]] = []

    async def send_control(self, ftype: FrameType, body: Any) -> None:
        self.sent.append((ftype, body))

    async def read_reply(self) -> dict[str, Any]:
        outcome = next(self.script)
        if isinstance(outcome, errors.ValiseError):
            raise outcome
        return outcome

    def abort(self) -> None:
        self.closed = True


def _client(
    monkeypatch: pytest.MonkeyPatch, outcomes: list[dict[str, Any] | errors.ValiseError]
) -> tuple[AsyncClient, list[ScriptedConnection]]:
    script = iter(outcomes)
    conns: list[ScriptedConnection] = []
    client = AsyncClient(retries=3, backoff=0.0)

    async def connection() -> Connection:
        if conns and not conns[-1].closed:
            return conns[-1]  # type: ignore[return-value]
        conns.append(ScriptedConnection(script))
        return conns[-1]  # type: ignore[return-value]

    monkeypatch.setattr(client, "_connection", connection)
    return client, conns


def test_retry_transient_then_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = errors.Busy("full", fatal=True)
    client, conns = _client(monkeypatch, [busy, errors.Unavailable("slow"), {"x": 1}])
    assert asyncio.run(client.stat("k")) == {"x": 1}
    # Fatal busy dropped the first connection; non-fatal unavailable kept the second.
    assert [c.closed for c in conns] == [True, False]


def test_no_retry_for_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    client, conns = _client(monkeypatch, [errors.NotFound("gone", fatal=False), {"x": 1}])
    with pytest.raises(errors.NotFound):
        asyncio.run(client.stat("k"))
    assert len(conns) == 1
    assert not conns[0].closed


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    client, conns = _client(monkeypatch, [errors.ConnectionLost("x") for _ in range(10)])
    with pytest.raises(errors.ConnectionLost):
        asyncio.run(client.stat("k"))
    assert len(conns) == 4  # one try and three retries, each on a new connection


def test_list_follows_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    pages: list[dict[str, Any] | errors.ValiseError] = [
        {"files": [{"key": "a"}], "cursor": "a"},
        {"files": [], "cursor": "b"},
        {"files": [{"key": "c"}, {"key": "d"}], "cursor": None},
    ]
    client, conns = _client(monkeypatch, pages)

    async def collect() -> list[str]:
        return [info["key"] async for info in client.list("p", limit=2)]

    assert asyncio.run(collect()) == ["a", "c", "d"]
    bodies = [body for _, body in conns[0].sent]
    assert bodies == [
        {"prefix": "p", "limit": 2},
        {"prefix": "p", "cursor": "a", "limit": 2},
        {"prefix": "p", "cursor": "b", "limit": 2},
    ]


# -- receive path: the decoder's own buffer and the transport protocol -----------


@pytest.fixture
def small_buffers() -> Iterator[None]:
    """Tiny buffer sizes, so a few hundred bytes of frames compact and grow the buffer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wire, "_MIN_BUFFER", 16)
        mp.setattr(wire, "_MIN_FREE", 8)
        mp.setattr(wire, "_MAX_SLACK", 96)
        yield


def _pattern(size: int, seed: int) -> bytes:
    """Bytes that differ at every offset, so a misplaced copy cannot go unnoticed."""
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha1(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return out[:size]


RECEIVED = [
    Frame(FrameType.OK, b'{"length":387}'),
    Frame(FrameType.DATA, _pattern(100, 1)),
    Frame(FrameType.DATA, b""),
    Frame(FrameType.DATA, _pattern(37, 2)),
    Frame(FrameType.END, hashlib.sha1(b"x").digest()),
    Frame(FrameType.DATA, _pattern(250, 3)),
    Frame(FrameType.ERROR, b'{"code":"corrupt"}'),
]
RECEIVED_BYTES = b"".join(join(encode_frame(f.type, f.payload)) for f in RECEIVED)


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
    data = join(encode_data(_pattern(250, 4)))
    frames: list[Frame] = []
    _pour(decoder, data[:15], frames, 1 << 20)
    assert frames == []
    assert decoder.next_frame() is NEED_DATA
    # The header is known: one read can bring the rest of the payload in one piece.
    assert len(decoder.get_buffer()) >= 250 - 10
    _pour(decoder, data[15:], frames, 1 << 20)
    assert frames == [Frame(FrameType.DATA, _pattern(250, 4))]


@pytest.mark.usefixtures("small_buffers")
def test_buffer_shrinks_back_after_a_transfer() -> None:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    first = decoder.capacity
    _pour(decoder, join(encode_data(_pattern(250, 6))), frames, 1 << 20)
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


class FakeTransport(asyncio.Transport):
    """What the protocol sees of a socket: writes recorded, reading paused or not."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.closing = False

    @property
    def paused(self) -> bool:
        return not self.reading.is_set()

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading.clear()

    def resume_reading(self) -> None:
        self.reading.set()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def _wired(timeout: float | None = 5.0) -> tuple[Connection, _FrameProtocol, FakeTransport]:
    decoder = FrameDecoder()
    protocol = _FrameProtocol(decoder)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return Connection(transport, protocol, decoder, timeout=timeout), protocol, transport


async def _deliver(
    protocol: _FrameProtocol, transport: FakeTransport, data: bytes, most: int
) -> None:
    """Be the transport: fill get_buffer() views ``most`` bytes a read, never while paused."""
    view = memoryview(data)
    while view:
        await transport.reading.wait()
        buf = protocol.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), len(view), most)
        buf[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]
        await asyncio.sleep(0)


async def _read(conn: Connection, count: int) -> list[Frame]:
    return [await conn.read_frame() for _ in range(count)]


@pytest.mark.usefixtures("small_buffers")
@pytest.mark.parametrize("most", [1, 7, 1 << 20])
def test_connection_reads_frames_split_at_every_position(most: int) -> None:
    async def main() -> None:
        for cut in range(len(RECEIVED_BYTES) + 1):
            conn, protocol, transport = _wired()
            reader = asyncio.create_task(_read(conn, len(RECEIVED)))
            for part in (RECEIVED_BYTES[:cut], RECEIVED_BYTES[cut:]):
                # A transport paused for good (or a reader never woken) hangs here.
                await asyncio.wait_for(_deliver(protocol, transport, part, most), 5.0)
            assert await asyncio.wait_for(reader, 5.0) == RECEIVED, f"split at {cut}"

    asyncio.run(main())


@pytest.mark.usefixtures("small_buffers")
def test_reading_pauses_while_nobody_reads_and_resumes_for_a_reader() -> None:
    async def main() -> None:
        conn, protocol, transport = _wired()
        delivery = asyncio.create_task(_deliver(protocol, transport, RECEIVED_BYTES, 1 << 20))
        for _ in range(10):
            await asyncio.sleep(0)
        assert transport.paused
        assert not delivery.done()
        assert await asyncio.wait_for(_read(conn, len(RECEIVED)), 5.0) == RECEIVED
        await asyncio.wait_for(delivery, 5.0)
        assert not transport.paused

    asyncio.run(main())


def test_frames_before_end_of_stream_then_connection_lost() -> None:
    async def main() -> None:
        data = join(encode_control(FrameType.OK, {}) + encode_data(b"abcdef"))
        conn, protocol, transport = _wired()
        await _deliver(protocol, transport, data[:-2], 1 << 20)
        protocol.eof_received()
        assert (await conn.read_frame()).type is FrameType.OK
        with pytest.raises(errors.ConnectionLost, match=r"middle of a frame \(9 bytes\)"):
            await conn.read_frame()

        conn, protocol, transport = _wired()
        reader = asyncio.create_task(conn.read_frame())
        await asyncio.sleep(0)
        protocol.connection_lost(ConnectionResetError("reset by peer"))
        with pytest.raises(errors.ConnectionLost, match="reset by peer"):
            await reader
        with pytest.raises(errors.ConnectionLost):
            await conn.send(encode_data(b"x"))

    asyncio.run(main())


def test_read_timeout_counts_silence_not_slow_frames() -> None:
    async def main() -> None:
        data = join(encode_data(_pattern(40, 5)))
        conn, protocol, transport = _wired(timeout=0.5)

        async def trickle() -> None:
            for i in range(len(data)):
                await asyncio.sleep(0.025)
                await _deliver(protocol, transport, data[i : i + 1], 1)

        # The frame takes ~1 s, twice the timeout, but bytes keep coming.
        feeder = asyncio.create_task(trickle())
        assert (await conn.read_frame()).payload == _pattern(40, 5)
        await feeder
        conn.timeout = 0.05
        with pytest.raises(errors.RequestTimeout):
            await conn.read_frame()

    asyncio.run(main())


def test_send_waits_for_the_transport_to_drain() -> None:
    async def main() -> None:
        conn, protocol, transport = _wired()
        protocol.pause_writing()
        sender = asyncio.create_task(conn.send(encode_data(b"abc")))
        await asyncio.sleep(0.01)
        assert not sender.done()
        assert transport.written == [b"\x03\x00\x00\x00\x03", b"abc"]
        protocol.resume_writing()
        await asyncio.wait_for(sender, 5.0)

        protocol.pause_writing()
        sender = asyncio.create_task(conn.send(encode_data(b"d")))
        await asyncio.sleep(0.01)
        protocol.connection_lost(None)
        with pytest.raises(errors.ConnectionLost):
            await sender

    asyncio.run(main())
