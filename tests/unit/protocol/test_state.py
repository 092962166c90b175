"""Unit tests for protocol/state.py: the transition table, uploads, fatal errors.

Every byte string runs whole-buffer and byte-at-a-time; both runs must agree.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import requests
from protocol.decoder import CLOSED, NEED_DATA, Sentinel
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import CLIENT_TYPES, HEADER, FrameType, encode_control
from protocol.state import Abort, Data, Event, Limits, ServerConnection, State, UploadEnd

LIMITS = Limits(max_frame=64, max_file_size=200, max_ttl=3600)

FAST = settings(max_examples=250)  # the rest comes from the "valise" profile (conftest)

EVENT_TYPES = (
    requests.Hello,
    requests.Put,
    requests.Get,
    requests.Stat,
    requests.Delete,
    requests.List,
    requests.Ping,
    requests.Resume,
    requests.Subscribe,
    Data,
    UploadEnd,
    Abort,
)


def ctl(frame_type: int, obj: dict[str, Any] | None = None) -> bytes:
    return encode_control(FrameType(frame_type), {} if obj is None else obj)


def raw(frame_type: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(frame_type, len(payload)) + payload


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def end(data: bytes) -> bytes:
    """END carrying the lowercase hex SHA-1 of ``data``."""
    return raw(FrameType.END, sha1(data).encode())


def put(key: str = "k", **fields: Any) -> bytes:
    return ctl(FrameType.PUT, {"key": key, **fields})


def data(payload: bytes) -> bytes:
    return raw(FrameType.DATA, payload)


# -- the split-feeding helper ----------------------------------------------------

Item = Event | ProtocolError


@dataclass
class Run:
    items: list[Item] = field(default_factory=list)
    end: Sentinel | None = None
    state: State = State.IDLE

    def summary(self) -> tuple[list[object], Sentinel | None, State]:
        return (
            [("error", i.payload()) if isinstance(i, ProtocolError) else i for i in self.items],
            self.end,
            self.state,
        )

    @property
    def events(self) -> list[Event]:
        return [i for i in self.items if not isinstance(i, ProtocolError)]

    @property
    def errors(self) -> list[ProtocolError]:
        return [i for i in self.items if isinstance(i, ProtocolError)]


def drain(conn: ServerConnection, items: list[Item]) -> Sentinel:
    """Take events until NEED_DATA or CLOSED, recording errors and going on after them."""
    for _ in range(100_000):
        try:
            result = conn.next_event()
        except ProtocolError as exc:
            items.append(exc)
            continue
        if isinstance(result, Sentinel):
            return result
        assert isinstance(result, EVENT_TYPES)
        items.append(result)
    raise AssertionError("connection did not reach NEED_DATA or CLOSED")


def run_pieces(
    pieces: list[bytes],
    *,
    eof: bool = False,
    hello_required: bool = False,
    limits: Limits = LIMITS,
) -> Run:
    conn = ServerConnection(limits, hello_required=hello_required)
    run = Run()
    run.end = drain(conn, run.items)
    feeds = [p for p in pieces if p] + ([b""] if eof else [])
    for piece in feeds:
        conn.receive_data(piece)
        run.end = drain(conn, run.items)
    run.state = conn.state
    return run


def feed(
    blob: bytes, *, eof: bool = False, hello_required: bool = False, limits: Limits = LIMITS
) -> Run:
    """Run ``blob`` whole and byte-at-a-time; both must agree."""
    whole = run_pieces([blob], eof=eof, hello_required=hello_required, limits=limits)
    split = run_pieces(
        [blob[i : i + 1] for i in range(len(blob))],
        eof=eof,
        hello_required=hello_required,
        limits=limits,
    )
    assert whole.summary() == split.summary()
    return whole


def assert_error(item: Item, code: ErrorCode, *, fatal: bool) -> ProtocolError:
    assert isinstance(item, ProtocolError), item
    assert item.code is code, item
    assert item.fatal is fatal, item
    return item


def assert_fatal_end(run: Run, code: ErrorCode) -> None:
    """The run ended with one fatal error of ``code`` and the connection is FAILED."""
    assert_error(run.items[-1], code, fatal=True)
    assert run.state is State.FAILED
    assert run.end is NEED_DATA


REQUESTS: list[tuple[bytes, Event]] = [
    (ctl(FrameType.HELLO, {"version": 1}), requests.Hello(1, None, None)),
    (ctl(FrameType.GET, {"key": "k"}), requests.Get("k", None, None)),
    (ctl(FrameType.STAT, {"key": "k"}), requests.Stat("k")),
    (ctl(FrameType.DELETE, {"key": "k"}), requests.Delete("k")),
    (ctl(FrameType.LIST, {}), requests.List("", None, 100)),
    (ctl(FrameType.PING, {"a": 1}), requests.Ping(b'{"a":1}')),
    (raw(FrameType.PING), requests.Ping(b"{}")),
]
REQUEST_IDS = ["hello", "get", "stat", "delete", "list", "ping", "ping-empty"]

#: Every request frame, PUT included, for "not allowed here" rows.
ALL_REQUESTS = [frame for frame, _ in REQUESTS] + [put()]
ALL_REQUEST_IDS = [*REQUEST_IDS, "put"]

UPLOAD_FRAMES = [data(b"x"), end(b""), ctl(FrameType.ABORT)]
UPLOAD_IDS = ["data", "end", "abort"]


# -- HANDSHAKE -------------------------------------------------------------------


def test_start_state() -> None:
    assert ServerConnection(LIMITS).state is State.IDLE
    assert ServerConnection(LIMITS, hello_required=True).state is State.HANDSHAKE


def test_handshake_hello_goes_idle() -> None:
    run = feed(
        ctl(FrameType.HELLO, {"version": 1, "token": "t"}) + ctl(FrameType.PING),
        hello_required=True,
    )
    assert run.items == [requests.Hello(1, "t", None), requests.Ping(b"{}")]
    assert run.state is State.IDLE


def test_handshake_hello_required_flag() -> None:
    # Same bytes; hello_required only changes whether HELLO must come first.
    run = feed(ctl(FrameType.HELLO, {"version": 1}), hello_required=True)
    assert run.items == [requests.Hello(1, None, None)]
    assert run.state is State.IDLE


@pytest.mark.parametrize("frame", ALL_REQUESTS[1:], ids=ALL_REQUEST_IDS[1:])
def test_handshake_other_request_is_fatal_unauthorized(frame: bytes) -> None:
    run = feed(frame + ctl(FrameType.HELLO, {"version": 1}), hello_required=True)
    assert len(run.items) == 1
    assert_fatal_end(run, ErrorCode.UNAUTHORIZED)


@pytest.mark.parametrize("frame", UPLOAD_FRAMES, ids=UPLOAD_IDS)
def test_handshake_upload_frame_is_fatal_unauthorized(frame: bytes) -> None:
    # Table row "HANDSHAKE, anything else" and docs/protocol.md section 2, HELLO (any
    # other first frame is unauthorized): DATA/END/ABORT included.
    run = feed(frame, hello_required=True)
    assert len(run.items) == 1
    assert_fatal_end(run, ErrorCode.UNAUTHORIZED)


@pytest.mark.parametrize(
    ("hello_required", "prefix", "type_byte", "code"),
    [
        (True, b"", FrameType.PING, ErrorCode.UNAUTHORIZED),
        (True, b"", FrameType.DATA, ErrorCode.UNAUTHORIZED),
        (False, b"", FrameType.DATA, ErrorCode.BAD_FRAME),
        (False, b"", FrameType.ABORT, ErrorCode.BAD_FRAME),
        (False, put(), FrameType.GET, ErrorCode.BAD_FRAME),
        (False, put(), FrameType.PUT, ErrorCode.BAD_FRAME),
    ],
)
def test_forbidden_frame_is_refused_from_its_header(
    hello_required: bool, prefix: bytes, type_byte: int, code: ErrorCode
) -> None:
    # The length is legal (under both limits); only the state forbids the frame,
    # and that is decided from the 5 header bytes, before any payload arrives.
    conn = ServerConnection(LIMITS, hello_required=hello_required)
    conn.receive_data(prefix + HEADER.pack(type_byte, LIMITS.max_frame))
    if prefix:
        assert isinstance(conn.next_event(), requests.Put)
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert info.value.code is code
    assert info.value.fatal is True
    assert conn.state is State.FAILED


@pytest.mark.parametrize("hello_required", [True, False])
@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ({"version": 2}, ErrorCode.BAD_VERSION),
        ({"version": 0}, ErrorCode.BAD_VERSION),
        ({}, ErrorCode.BAD_REQUEST),
        ({"version": "1"}, ErrorCode.BAD_REQUEST),
        ({"version": True}, ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_hello_is_fatal(obj: dict[str, Any], code: ErrorCode, hello_required: bool) -> None:
    run = feed(ctl(FrameType.HELLO, obj) + ctl(FrameType.PING), hello_required=hello_required)
    assert len(run.items) == 1
    assert_fatal_end(run, code)


# -- IDLE --------------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "event"), REQUESTS, ids=REQUEST_IDS)
def test_idle_request_stays_idle(frame: bytes, event: Event) -> None:
    run = feed(frame + frame, eof=True)
    assert run.items == [event, event]
    assert run.state is State.IDLE
    assert run.end is CLOSED


def test_idle_put_starts_an_upload() -> None:
    conn = ServerConnection(LIMITS)
    conn.receive_data(put("k", size=3, ttl=60, content_type="text/plain"))
    assert conn.next_event() == requests.Put("k", 3, 60, "text/plain")
    assert conn.state is State.UPLOADING
    assert conn.uploading
    assert conn.upload_received == 0
    assert conn.next_event() is NEED_DATA


@pytest.mark.parametrize("frame", UPLOAD_FRAMES, ids=UPLOAD_IDS)
def test_idle_upload_frames_are_fatal_bad_frame(frame: bytes) -> None:
    run = feed(frame + ctl(FrameType.PING))
    assert len(run.items) == 1
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


@pytest.mark.parametrize(
    "frame",
    [
        ctl(FrameType.GET, {"key": ""}),
        ctl(FrameType.STAT, {"key": "a\x00"}),
        ctl(FrameType.DELETE, {}),
        ctl(FrameType.LIST, {"limit": 0}),
        ctl(FrameType.GET, {"key": "k", "offset": -1}),
    ],
)
def test_idle_request_errors_are_not_fatal(frame: bytes) -> None:
    run = feed(frame + ctl(FrameType.PING), eof=True)
    assert len(run.items) == 2
    assert isinstance(run.items[0], ProtocolError)
    assert run.items[0].fatal is False
    assert run.items[0].code in (ErrorCode.BAD_KEY, ErrorCode.BAD_REQUEST)
    assert run.items[1] == requests.Ping(b"{}")
    assert run.state is State.IDLE
    assert run.end is CLOSED


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (put(""), ErrorCode.BAD_KEY),
        (put("k", size=201), ErrorCode.TOO_LARGE),
        (put("k", ttl=0), ErrorCode.BAD_REQUEST),
        (put("k", size=True), ErrorCode.BAD_REQUEST),
        (ctl(FrameType.PUT, {}), ErrorCode.BAD_REQUEST),
    ],
)
def test_bad_put_is_fatal_and_stops_decoding(frame: bytes, code: ErrorCode) -> None:
    # The client may already be streaming DATA; none of it may be taken as requests.
    run = feed(frame + data(b"x") + ctl(FrameType.PING))
    assert len(run.items) == 1
    assert_fatal_end(run, code)


@pytest.mark.parametrize("payload", [b"[]", b"{", b'"x"', b"\xff"])
def test_idle_malformed_control_payload_is_fatal_bad_frame(payload: bytes) -> None:
    run = feed(raw(FrameType.PING, payload) + ctl(FrameType.PING))
    assert len(run.items) == 1
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


# -- UPLOADING ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        lambda b: hashlib.sha1(b).digest(),
        lambda b: hashlib.sha1(b).hexdigest().encode(),
        lambda b: hashlib.sha1(b).hexdigest().upper().encode(),
    ],
    ids=["raw", "hex", "HEX"],
)
@pytest.mark.parametrize("declared", [True, False])
def test_upload_with_matching_digest(spelling: Any, declared: bool) -> None:
    content = b"hello, " * 20 + b"world"
    parts = [content[:64], content[64:128], b"", content[128:]]
    fields = {"size": len(content)} if declared else {}
    blob = put("k", **fields) + b"".join(data(p) for p in parts)
    blob += raw(FrameType.END, spelling(content))
    run = feed(blob, eof=True)
    assert run.items == [
        requests.Put("k", len(content) if declared else None, None, None),
        *[Data(p) for p in parts],
        UploadEnd(len(content), sha1(content)),
    ]
    assert run.state is State.IDLE
    assert run.end is CLOSED


def test_upload_received_counts_data_bytes() -> None:
    conn = ServerConnection(LIMITS)
    conn.receive_data(put() + data(b"abc") + data(b"") + data(b"defg"))
    assert isinstance(conn.next_event(), requests.Put)
    assert conn.next_event() == Data(b"abc")
    assert conn.upload_received == 3
    assert conn.next_event() == Data(b"")
    assert conn.upload_received == 3
    assert conn.next_event() == Data(b"defg")
    assert conn.upload_received == 7
    conn.receive_data(end(b"abcdefg"))
    assert conn.next_event() == UploadEnd(7, sha1(b"abcdefg"))
    assert conn.upload_received == 0
    assert not conn.uploading


@pytest.mark.parametrize("declared", [True, False])
def test_zero_byte_upload(declared: bool) -> None:
    fields = {"size": 0} if declared else {}
    run = feed(put("empty", **fields) + end(b""))
    assert run.items[1:] == [UploadEnd(0, "da39a3ee5e6b4b0d3255bfef95601890afd80709")]
    assert run.state is State.IDLE


def test_wrong_digest_is_non_fatal_checksum_mismatch() -> None:
    wrong = hashlib.sha1(b"other").hexdigest().upper()
    blob = put("k") + data(b"abc") + raw(FrameType.END, wrong.encode())
    blob += put("k2") + data(b"xyz") + end(b"xyz") + ctl(FrameType.PING)
    run = feed(blob, eof=True)
    assert run.items[:2] == [requests.Put("k", None, None, None), Data(b"abc")]
    exc = assert_error(run.items[2], ErrorCode.CHECKSUM_MISMATCH, fatal=False)
    assert exc.extra == {"expected": wrong.lower(), "actual": sha1(b"abc")}
    assert exc.payload()["expected"] == wrong.lower()
    assert exc.payload()["actual"] == sha1(b"abc")
    # The connection is IDLE again and takes a new upload and requests.
    assert run.items[3:] == [
        requests.Put("k2", None, None, None),
        Data(b"xyz"),
        UploadEnd(3, sha1(b"xyz")),
        requests.Ping(b"{}"),
    ]
    assert run.state is State.IDLE
    assert run.end is CLOSED


def test_wrong_raw_digest_reports_lowercase_hex() -> None:
    wrong = bytes(range(20))
    run = feed(put() + data(b"abc") + raw(FrameType.END, wrong))
    exc = assert_error(run.items[-1], ErrorCode.CHECKSUM_MISMATCH, fatal=False)
    assert exc.extra == {"expected": wrong.hex(), "actual": sha1(b"abc")}
    assert run.state is State.IDLE


def test_unhashed_upload_leaves_the_digest_to_the_caller() -> None:
    # The server's mode: its chunk writer hashes off the event loop and checks END.
    conn = ServerConnection(LIMITS, hash_uploads=False)
    wrong = bytes(range(20))
    conn.receive_data(put("k") + data(b"abc") + raw(FrameType.END, wrong))
    conn.receive_data(put("k", size=9) + data(b"abc") + end(b"abc"))
    items: list[Any] = []
    drain(conn, items)
    assert items[2] == UploadEnd(3, wrong.hex(), verified=False)
    # The size is still the state machine's to check.
    assert_error(items[-1], ErrorCode.SIZE_MISMATCH, fatal=False)
    assert conn.state is State.IDLE


@pytest.mark.parametrize(("declared", "sent"), [(10, b"abc"), (1, b""), (3, b"ab")])
def test_short_upload_is_non_fatal_size_mismatch(declared: int, sent: bytes) -> None:
    run = feed(put("k", size=declared) + data(sent) + end(sent) + ctl(FrameType.PING))
    assert_error(run.items[-2], ErrorCode.SIZE_MISMATCH, fatal=False)
    assert run.items[-1] == requests.Ping(b"{}")
    assert run.state is State.IDLE


def test_data_past_declared_size_is_fatal_too_large() -> None:
    run = feed(put("k", size=5) + data(b"abc") + data(b"def") + end(b"abcdef"))
    assert run.items[1] == Data(b"abc")
    assert len(run.items) == 3
    assert_fatal_end(run, ErrorCode.TOO_LARGE)


def test_data_exactly_declared_size_is_fine() -> None:
    run = feed(put("k", size=6) + data(b"abc") + data(b"def") + end(b"abcdef"))
    assert run.items[-1] == UploadEnd(6, sha1(b"abcdef"))


def test_data_past_max_file_size_is_fatal_too_large() -> None:
    chunks = [b"a" * 50] * 4  # exactly max_file_size (200) is fine
    blob = put() + b"".join(data(c) for c in chunks)
    run = feed(blob + end(b"".join(chunks)))
    assert run.items[-1] == UploadEnd(200, sha1(b"a" * 200))
    run = feed(blob + data(b"b") + end(b"a" * 200 + b"b"))
    assert len(run.items) == 1 + 4 + 1
    assert_fatal_end(run, ErrorCode.TOO_LARGE)


def test_data_over_max_frame_is_fatal_bad_frame() -> None:
    run = feed(put() + data(b"x" * 65))
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


@pytest.mark.parametrize("payload", [b"", b"{}", b'{"reason":"user"}'])
def test_abort_discards_the_upload(payload: bytes) -> None:
    blob = put("k", size=10) + data(b"abc") + raw(FrameType.ABORT, payload)
    blob += ctl(FrameType.STAT, {"key": "k"})
    run = feed(blob, eof=True)
    assert run.items == [
        requests.Put("k", 10, None, None),
        Data(b"abc"),
        Abort(),
        requests.Stat("k"),
    ]
    assert run.state is State.IDLE


def test_abort_with_malformed_payload_is_fatal_bad_frame() -> None:
    run = feed(put() + raw(FrameType.ABORT, b"[]"))
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


@pytest.mark.parametrize("frame", ALL_REQUESTS, ids=ALL_REQUEST_IDS)
def test_request_inside_an_upload_is_fatal_bad_frame(frame: bytes) -> None:
    run = feed(put() + data(b"abc") + frame + end(b"abc"))
    assert run.items[:2] == [requests.Put("k", None, None, None), Data(b"abc")]
    assert len(run.items) == 3
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


@pytest.mark.parametrize(
    "payload", [b"z" * 40, b"ab " * 13 + b"a", sha1(b"abc")[:38].encode() + b"  "]
)
def test_end_that_is_not_a_digest_is_fatal_bad_frame(payload: bytes) -> None:
    run = feed(put() + data(b"abc") + raw(FrameType.END, payload))
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


@pytest.mark.parametrize("length", [0, 19, 21, 39, 41])
def test_end_of_wrong_length_is_fatal_bad_frame(length: int) -> None:
    run = feed(put() + raw(FrameType.END, b"0" * length))
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


# -- after a fatal error, end of input -----------------------------------------------


def test_after_a_fatal_error_nothing_more_is_decoded() -> None:
    conn = ServerConnection(LIMITS)
    conn.receive_data(data(b"x") + ctl(FrameType.PING))
    with pytest.raises(ProtocolError) as info:
        conn.next_event()
    assert info.value.code is ErrorCode.BAD_FRAME
    assert conn.state is State.FAILED
    for _ in range(3):
        assert conn.next_event() is NEED_DATA
    conn.receive_data(ctl(FrameType.PING))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is NEED_DATA
    assert conn.next_event() is NEED_DATA


def test_fail_stops_decoding_and_drops_the_upload() -> None:
    conn = ServerConnection(LIMITS)
    conn.receive_data(put() + data(b"abc"))
    assert isinstance(conn.next_event(), requests.Put)
    conn.fail()
    assert conn.state is State.FAILED
    assert not conn.uploading
    assert conn.upload_received == 0
    assert conn.next_event() is NEED_DATA


def test_eof_at_a_boundary_is_closed() -> None:
    run = feed(ctl(FrameType.PING), eof=True)
    assert run.items == [requests.Ping(b"{}")]
    assert run.end is CLOSED


def test_eof_mid_frame_is_fatal_bad_frame() -> None:
    run = feed(ctl(FrameType.PING) + ctl(FrameType.PING)[:-1], eof=True)
    assert run.items[0] == requests.Ping(b"{}")
    assert_fatal_end(run, ErrorCode.BAD_FRAME)


def test_eof_mid_upload_on_a_boundary_is_closed() -> None:
    # Dropping the upload is the server's job; the decoder reports a clean close.
    run = feed(put() + data(b"abc"), eof=True)
    assert run.end is CLOSED
    assert run.state is State.UPLOADING


def test_in_frame_follows_partial_frames() -> None:
    conn = ServerConnection(LIMITS)
    assert not conn.in_frame
    conn.receive_data(ctl(FrameType.PING)[:3])
    assert conn.next_event() is NEED_DATA
    assert conn.in_frame
    conn.receive_data(ctl(FrameType.PING)[3:])
    assert conn.next_event() == requests.Ping(b"{}")
    assert not conn.in_frame


# -- pipelining ----------------------------------------------------------------------


def test_pipelined_requests_come_out_in_order() -> None:
    content = bytes(range(256)) * 3  # 768 bytes: over max_file_size of LIMITS
    limits = Limits(max_frame=256, max_file_size=1000, max_ttl=3600)
    blob = (
        ctl(FrameType.HELLO, {"version": 1})
        + ctl(FrameType.PING, {"n": 1})
        + put("a/b", size=len(content), ttl=60)
        + data(content[:256])
        + data(content[256:512])
        + data(content[512:])
        + end(content)
        + ctl(FrameType.STAT, {"key": "a/b"})
        + ctl(FrameType.GET, {"key": "a/b", "offset": 1, "length": 2})
        + ctl(FrameType.GET, {"key": ""})
        + ctl(FrameType.LIST, {"prefix": "a/", "limit": 5000})
        + put("z") + ctl(FrameType.ABORT)
        + ctl(FrameType.DELETE, {"key": "a/b"})
        + ctl(FrameType.PING, {"n": 2})
    )  # fmt: skip
    run = feed(blob, eof=True, hello_required=True, limits=limits)
    assert run.items[:10] == [
        requests.Hello(1, None, None),
        requests.Ping(b'{"n":1}'),
        requests.Put("a/b", len(content), 60, None),
        Data(content[:256]),
        Data(content[256:512]),
        Data(content[512:]),
        UploadEnd(len(content), sha1(content)),
        requests.Stat("a/b"),
        requests.Get("a/b", 1, 2),
        run.items[9],
    ]
    assert_error(run.items[9], ErrorCode.BAD_KEY, fatal=False)
    assert run.items[10:] == [
        requests.List("a/", None, 1000),
        requests.Put("z", None, None, None),
        Abort(),
        requests.Delete("a/b"),
        requests.Ping(b'{"n":2}'),
    ]
    assert run.end is CLOSED
    assert run.state is State.IDLE


# -- replies to what was accepted -------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":"\\ud800"}',
        # Re-encoding would turn each "1e5" into "100000.0": about 144 KiB.
        b'{"a":[' + b",".join([b"1e5"] * 16000) + b"]}",
        b'{ "b" : [1, 2.50, "\\u00e9"] ,"a":null}',
    ],
    ids=["lone-surrogate", "float-expansion", "spacing"],
)
def test_ping_payload_is_kept_byte_for_byte(payload: bytes) -> None:
    # docs/protocol.md section 2, PING, and section 8 item 17: echoed as sent, so any
    # PING that fits 64 KiB fits the reply (regression: re-encoding it failed).
    assert len(payload) <= 65536
    run = feed(raw(FrameType.PING, payload))
    assert run.items == [requests.Ping(payload)]


def test_accepted_control_strings_can_be_encoded() -> None:
    # A lone surrogate has no UTF-8 form; encode_control falls back to \u escapes.
    encoded = encode_control(FrameType.OK, {"a": "\ud800", "b": "\u00e9"})
    assert json.loads(encoded[5:]) == {"a": "\ud800", "b": "\u00e9"}


# -- properties ----------------------------------------------------------------------

small_int = st.integers(-2, 300) | st.booleans() | st.none() | st.text(max_size=2)
request_obj = st.fixed_dictionaries(
    {},
    optional={
        "key": st.sampled_from(["k", "k", "a/b", "", "\x00", "\ud800"]) | st.integers(),
        "version": st.integers(0, 2) | st.none(),
        "size": small_int,
        "ttl": small_int,
        "offset": small_int,
        "length": small_int,
        "limit": small_int,
        "prefix": st.text(max_size=3) | st.integers(),
        "cursor": st.text(max_size=3) | st.none(),
        "content_type": st.text(max_size=3) | st.integers(),
    },
)

put_fields = st.fixed_dictionaries(
    {}, optional={"size": st.integers(0, 210) | st.just(True), "ttl": st.sampled_from([0, 60])}
)


@st.composite
def upload_bytes(draw: st.DrawFn) -> bytes:
    """PUT, DATA frames, then END (right, wrong or malformed digest) or ABORT, or nothing."""
    parts = draw(st.lists(st.binary(max_size=64), max_size=5))
    content = b"".join(parts)
    fields = draw(put_fields)
    if draw(st.booleans()):
        fields["size"] = len(content) + draw(st.sampled_from([0, 0, -1, 1]))
    blob = put(draw(st.sampled_from(["k", "a/b", ""])), **fields)
    blob += b"".join(data(p) for p in parts)
    digest = hashlib.sha1(content).digest()
    finish = draw(
        st.sampled_from(
            [
                raw(FrameType.END, digest),
                raw(FrameType.END, digest.hex().upper().encode()),
                raw(FrameType.END, bytes(20)),
                raw(FrameType.END, b"Z" * 40),
                ctl(FrameType.ABORT),
                b"",
            ]
        )
    )
    return blob + finish


@st.composite
def client_bytes(draw: st.DrawFn) -> bytes:
    """Mostly well-framed client traffic (requests, uploads), sometimes lies and noise."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=12))
    if choice == 1:
        type_byte = draw(st.integers(0, 255))
        length = draw(st.integers(0, 80) | st.just(0xFFFFFFFF))
        return HEADER.pack(type_byte, length) + draw(st.binary(max_size=80))
    if choice == 2:
        return data(draw(st.binary(max_size=65)))
    if choice <= 5:
        types = sorted(CLIENT_TYPES - {FrameType.DATA, FrameType.END, FrameType.PUT})
        frame_type = draw(st.sampled_from(types))
        # json.dumps escapes the lone surrogate that request_obj may hold.
        return raw(frame_type, json.dumps(draw(request_obj)).encode())
    return draw(upload_bytes())


@FAST
@given(
    chunks=st.lists(client_bytes(), max_size=10),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
    eof=st.booleans(),
    hello_required=st.booleans(),
)
def test_arbitrary_bytes_give_events_or_protocol_error(
    chunks: list[bytes], cuts: list[int], eof: bool, hello_required: bool
) -> None:
    blob = b"".join(chunks)
    points = sorted({0, len(blob), *(c for c in cuts if c < len(blob))})
    pieces = [blob[a:b] for a, b in itertools.pairwise(points)]
    # drain() only lets ProtocolError through as an item; anything else fails the test.
    run = run_pieces(pieces, eof=eof, hello_required=hello_required)
    whole = run_pieces([blob], eof=eof, hello_required=hello_required)
    assert run.summary() == whole.summary()

    fatal = [e for e in run.errors if e.fatal]
    assert len(fatal) <= 1
    if fatal:
        assert run.items[-1] is fatal[0]
        assert run.state is State.FAILED
        assert run.end is NEED_DATA
    else:
        assert run.end is (CLOSED if eof else NEED_DATA)
    # Uploads: Data only inside one, UploadEnd matches what was streamed.
    received: bytearray | None = None
    for item in run.items:
        if isinstance(item, requests.Put):
            assert received is None
            received = bytearray()
        elif isinstance(item, Data):
            assert received is not None
            received += item.payload
            assert len(received) <= LIMITS.max_file_size
        elif isinstance(item, UploadEnd):
            assert received is not None
            assert item.size == len(received)
            assert item.sha1 == sha1(bytes(received))
            received = None
        elif isinstance(item, Abort):
            assert received is not None
            received = None
        elif isinstance(item, ProtocolError) and item.code in (
            ErrorCode.CHECKSUM_MISMATCH,
            ErrorCode.SIZE_MISMATCH,
        ):
            assert received is not None
            assert item.fatal is False
            received = None


# -- revision 2: RESUME and SUBSCRIBE (docs/protocol.md sections 6.1, 6.3) ------------


def _events(conn: ServerConnection, blob: bytes) -> list[Item]:
    items: list[Item] = []
    conn.receive_data(blob)
    drain(conn, items)
    return items


@pytest.mark.parametrize("step", [None, 1])
def test_resume_continues_from_the_servers_offset(step: int | None) -> None:
    conn = ServerConnection(LIMITS, hash_uploads=True)
    items = _events(conn, raw(FrameType.RESUME, b'{"upload_id": "u1"}'))
    assert items == [requests.Resume("u1")]
    assert conn.state is State.IDLE  # until the server accepts it
    conn.resume_upload(declared=10, offset=6)
    assert conn.uploading and conn.upload_received == 6
    blob = data(b"7890") + raw(FrameType.END, bytes(20))
    pieces = [blob] if step is None else [blob[i : i + 1] for i in range(len(blob))]
    got: list[Item] = []
    for piece in pieces:
        got += _events(conn, piece)
    # The digest covers bytes this machine never saw: the caller checks it.
    assert got == [Data(b"7890"), UploadEnd(10, "00" * 20, verified=False)]
    assert conn.state is State.IDLE


def test_a_resumed_upload_keeps_its_declared_size() -> None:
    conn = ServerConnection(LIMITS)
    _events(conn, raw(FrameType.RESUME, b'{"upload_id": "u1"}'))
    conn.resume_upload(declared=8, offset=6)
    items = _events(conn, data(b"789"))
    assert isinstance(items[-1], ProtocolError)
    assert items[-1].code is ErrorCode.TOO_LARGE and items[-1].fatal


def test_data_before_the_resume_is_accepted_is_bad_frame() -> None:
    conn = ServerConnection(LIMITS)
    items = _events(conn, raw(FrameType.RESUME, b'{"upload_id": "u1"}') + data(b"x"))
    assert items[0] == requests.Resume("u1")
    assert isinstance(items[1], ProtocolError)
    assert items[1].code is ErrorCode.BAD_FRAME and items[1].fatal


def test_unfinished_data_is_a_data_frame_cut_off_midway() -> None:
    conn = ServerConnection(LIMITS)
    _events(
        conn, ctl(FrameType.PUT, {"key": "k"}) + data(b"abc") + raw(FrameType.DATA, b"defg")[:7]
    )
    assert conn.upload_received == 3
    assert conn.unfinished_data() == b"de"
    items = _events(conn, b"")  # the connection ends there
    assert isinstance(items[-1], ProtocolError) and items[-1].fatal
    assert conn.state is State.FAILED
    assert conn.unfinished_data() == b"de"  # the server may still keep them


def test_unfinished_data_stays_within_the_declared_size() -> None:
    conn = ServerConnection(LIMITS)
    _events(conn, ctl(FrameType.PUT, {"key": "k", "size": 4}) + raw(FrameType.DATA, b"abcdef")[:9])
    assert conn.unfinished_data() == b"abcd"
    conn.fail()
    assert conn.unfinished_data() == b"abcd"


@pytest.mark.parametrize(
    "blob",
    [
        ctl(FrameType.PUT, {"key": "k"}) + data(b"abc") + b"\x03\x00",  # inside a header
        ctl(FrameType.PUT, {"key": "k"}) + data(b"abc"),  # on a frame boundary
        raw(FrameType.DATA, b"abcd")[:7],  # no upload: DATA refused from its header
    ],
)
def test_no_unfinished_data_outside_a_data_payload(blob: bytes) -> None:
    conn = ServerConnection(LIMITS)
    _events(conn, blob)
    assert conn.unfinished_data() == b""


def test_no_unfinished_data_once_an_upload_is_over() -> None:
    conn = ServerConnection(LIMITS)
    _events(conn, ctl(FrameType.PUT, {"key": "k"}) + data(b"abc") + end(b"abc"))
    assert conn.state is State.IDLE
    assert conn.unfinished_data() == b""


def test_subscribed_connection_takes_only_ping() -> None:
    conn = ServerConnection(LIMITS)
    items = _events(conn, raw(FrameType.SUBSCRIBE, b'{"prefix": "p/", "since": "1-0"}'))
    assert items == [requests.Subscribe("p/", "1-0")]
    conn.subscribed()
    assert _events(conn, raw(FrameType.PING, b'{"n":1}')) == [requests.Ping(b'{"n":1}')]
    items = _events(conn, raw(FrameType.STAT, b'{"key": "k"}'))
    assert isinstance(items[0], ProtocolError)
    assert items[0].code is ErrorCode.BAD_FRAME and items[0].fatal
    assert conn.state is State.FAILED


def test_accepting_in_the_wrong_state_is_our_bug() -> None:
    conn = ServerConnection(LIMITS)
    _events(conn, raw(FrameType.PUT, b'{"key": "k"}'))
    with pytest.raises(RuntimeError):
        conn.resume_upload(None, 0)
    with pytest.raises(RuntimeError):
        conn.subscribed()


@pytest.mark.parametrize(
    ("frame_type", "feature"), [(FrameType.RESUME, "resume"), (FrameType.SUBSCRIBE, "subscribe")]
)
def test_a_feature_not_offered_is_an_unknown_frame(frame_type: FrameType, feature: str) -> None:
    conn = ServerConnection(LIMITS, features=frozenset({"versions"}))
    items = _events(conn, raw(frame_type, b'{"upload_id": "u1"}'))
    assert isinstance(items[0], ProtocolError)
    assert items[0].code is ErrorCode.BAD_FRAME and items[0].fatal
    assert "not offered" in items[0].message
