"""Coverage-guided fuzzing of the sans-IO protocol layer (STYLE.md: the decoder's contract).

    python -m tests.tools.fuzz [--seconds 60] [--corpus DIR] [--artifacts DIR] [--engine auto]
    python -m tests.tools.fuzz --replay FILE...

Arbitrary bytes, split at points the input chooses, go to
:class:`protocol.state.ServerConnection` (with and without ``hello_required``),
to :class:`protocol.decoder.FrameDecoder` (client and server directions), and
to ``decode_digest`` / ``decode_control``. The contract (h11's
``fuzz/afl-server.py``): out come frames, events, NEED_DATA, CLOSED or
:class:`ProtocolError`; any other exception is a crash. A small model checks
the events too: after a fatal error nothing more comes out, and every
UploadEnd's size and SHA-1 are those of the DATA since its PUT.

The engine is atheris (libFuzzer) when it imports, run in a child process so
its exit codes and time limit are ours; otherwise a time-bounded hypothesis
loop. Exit code 0: no crash; 1: a crash, its input saved in ``--artifacts``
(default tests/fuzz_corpus).

Input layout (:func:`run_one`), so a saved input replays without any engine:

    byte 0   target (bits 0-2), hello_required (bit 3), max_frame (4-5), max_file_size (6-7)
    byte 1   number of split points (bits 0-3), no end of input (bit 4)
    2 bytes  per split point: the length of the next piece, big-endian
    rest     the body: the byte stream, or ops that build frames (targets 6 and 7)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import requests
from protocol.decoder import CLOSED, NEED_DATA, FrameDecoder, decode_control, decode_digest
from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import (
    CLIENT_TYPES,
    CONTROL_TYPES,
    HEADER,
    MAX_CONTROL,
    MAX_ID,
    SERVER_TYPES,
    SHA1_HEX_SIZE,
    SHA1_SIZE,
    Frame,
    FrameType,
    encode_control,
)
from protocol.state import Abort, Data, Limits, ServerConnection, UploadEnd

DESCRIPTION = "Coverage-guided fuzzing of the sans-IO protocol layer."
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ARTIFACTS = ROOT / "tests" / "fuzz_corpus"

MAX_FRAMES = (16, 1024, 64 * 1024, 1024 * 1024)
MAX_FILE_SIZES = (0, 100, 100_000, 64 * 1024**3)
MAX_TTL = 86400

TARGET_CONN, TARGET_CONN_2 = 0, 1
TARGET_CLIENT_DECODER, TARGET_SERVER_DECODER = 2, 3
TARGET_DIGEST, TARGET_CONTROL = 4, 5
TARGET_BUILT, TARGET_BUILT_2 = 6, 7

#: Frame types in a fixed order, so one input byte names one.
TYPES = tuple(FrameType)
U16 = struct.Struct("!H")


class ContractViolation(AssertionError):
    """The protocol layer returned something its contract rules out."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


# -- the input layout -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    target: int
    hello_required: bool
    limits: Limits
    pieces: list[bytes]
    eof: bool


def split_input(data: bytes) -> tuple[int, bool, Limits, list[int], bool, bytes]:
    head = data[:2].ljust(2, b"\0")
    target = head[0] & 0x07
    hello_required = bool(head[0] & 0x08)
    limits = Limits(MAX_FRAMES[(head[0] >> 4) & 3], MAX_FILE_SIZES[head[0] >> 6], MAX_TTL)
    count = head[1] & 0x0F
    eof = not head[1] & 0x10
    at = 2
    cuts = []
    for _ in range(count):
        if at + 2 > len(data):
            break
        cuts.append(U16.unpack_from(data, at)[0])
        at += 2
    return target, hello_required, limits, cuts, eof, data[at:]


def encode_input(
    target: int,
    body: bytes,
    *,
    hello_required: bool = False,
    max_frame: int = 2,
    max_file_size: int = 3,
    cuts: Sequence[int] = (),
    eof: bool = True,
) -> bytes:
    """The inverse of :func:`split_input` (``max_*`` are indexes into the tables above)."""
    first = target | hello_required << 3 | max_frame << 4 | max_file_size << 6
    second = len(cuts) | (0 if eof else 0x10)
    return bytes([first, second]) + b"".join(U16.pack(c) for c in cuts) + body


def pieces(stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    """The stream in pieces of the given lengths, then the rest (empty pieces dropped)."""
    out = []
    at = 0
    for cut in cuts:
        out.append(stream[at : at + cut])
        at += cut
    out.append(stream[at:])
    return [piece for piece in out if piece]


# -- building frames from ops (targets 6 and 7) -------------------------------------


def frame_bytes(frame_type: int, payload: bytes) -> bytes:
    return HEADER.pack(frame_type, len(payload)) + payload


class Builder:
    """Ops to frames, so that valid uploads (with a matching SHA-1) are easy to reach.

    Each op is one byte, mostly followed by a length byte and that many bytes:
    ``op % 16`` in 0..11 is a raw frame of that type; 12, 13, 14 are END with
    the right SHA-1 of the DATA since the last PUT (raw, lower hex, upper hex);
    15 is a request from a template (``op >> 4`` picks it), the bytes being its
    key or prefix.
    """

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.hasher = hashlib.sha1()
        self.received = 0
        #: Index and key of a PUT whose ``size`` is filled in at its END.
        self.sized_put: tuple[int, str] | None = None

    def build(self, body: bytes) -> bytes:
        at = 0
        while at < len(body):
            op = body[at]
            at += 1
            kind = op & 0x0F
            if 12 <= kind < 15:
                self.end(kind - 12)  # END ops take no length or payload
                continue
            length = body[at] if at < len(body) else 0
            payload = body[at + 1 : at + 1 + length]
            at += 1 + length
            if kind < len(TYPES):
                self.raw(TYPES[kind], payload)
            else:
                self.template(op >> 4, payload)
        return b"".join(self.frames)

    def raw(self, frame_type: FrameType, payload: bytes) -> None:
        if frame_type is FrameType.DATA:
            self.hasher.update(payload)
            self.received += len(payload)
        self.frames.append(frame_bytes(frame_type, payload))

    def end(self, spelling: int) -> None:
        digest = self.hasher.digest()
        encoded = (digest, digest.hex().encode(), digest.hex().upper().encode())[spelling]
        if self.sized_put is not None:
            index, key = self.sized_put
            self.frames[index] = control_bytes(FrameType.PUT, {"key": key, "size": self.received})
        self.frames.append(frame_bytes(FrameType.END, encoded))
        self.start_upload()

    def start_upload(self) -> None:
        self.hasher = hashlib.sha1()
        self.received = 0
        self.sized_put = None

    def template(self, which: int, payload: bytes) -> None:
        text = payload.decode("latin-1") or "k"
        number = payload[0] if payload else 0
        match which % 8:
            case 0:
                self.start_upload()
                self.frames.append(control_bytes(FrameType.PUT, {"key": text}))
            case 1:
                self.start_upload()
                self.sized_put = (len(self.frames), text)
                self.frames.append(control_bytes(FrameType.PUT, {"key": text, "size": 0}))
            case 2:
                self.frames.append(control_bytes(FrameType.HELLO, {"version": 1, "token": text}))
            case 3:
                obj = {"key": text, "offset": number, "length": number // 2}
                self.frames.append(control_bytes(FrameType.GET, obj))
            case 4:
                self.frames.append(control_bytes(FrameType.STAT, {"key": text}))
            case 5:
                self.frames.append(control_bytes(FrameType.DELETE, {"key": text}))
            case 6:
                obj = {"prefix": text, "limit": number, "cursor": None}
                self.frames.append(control_bytes(FrameType.LIST, obj))
            case _:
                self.frames.append(control_bytes(FrameType.PUT, {"key": text, "ttl": number}))
                self.start_upload()


def control_bytes(frame_type: FrameType, obj: dict[str, Any]) -> bytes:
    return frame_bytes(frame_type, json.dumps(obj).encode())


# -- the model of ServerConnection's events ----------------------------------------


@dataclass
class ConnModel:
    """What a correct ServerConnection may hand out, given what it handed out so far."""

    limits: Limits
    hello_required: bool
    greeted: bool = False
    failed: bool = False
    closed: bool = False
    uploading: bool = False
    declared: int | None = None
    received: int = 0
    hasher: Any = field(default_factory=hashlib.sha1)

    def start(self, declared: int | None) -> None:
        self.uploading = True
        self.declared = declared
        self.received = 0
        self.hasher = hashlib.sha1()

    def finish(self) -> None:
        self.uploading = False
        self.declared = None

    def event(self, event: object) -> None:
        check(not self.failed, f"{event!r} after a fatal error")
        check(not self.closed, f"{event!r} after CLOSED")
        if self.hello_required and not self.greeted:
            check(isinstance(event, requests.Hello), f"{event!r} before HELLO")
            self.greeted = True
        match event:
            case requests.Put(key, size, ttl, _):
                check(not self.uploading, "PUT inside an upload")
                check_key(key)
                check(size is None or 0 <= size <= self.limits.max_file_size, f"size {size}")
                check(ttl is None or 1 <= ttl <= self.limits.max_ttl, f"ttl {ttl}")
                self.start(size)
            case Data(payload):
                check(self.uploading, "Data outside an upload")
                check(len(payload) <= self.limits.max_frame, "DATA over max_frame")
                self.received += len(payload)
                self.hasher.update(payload)
                limit = self.limits.max_file_size if self.declared is None else self.declared
                check(self.received <= limit, "upload past its limit")
            case UploadEnd(size, sha1):
                check(self.uploading, "UploadEnd outside an upload")
                check(size == self.received, f"UploadEnd size {size}, DATA added {self.received}")
                check(sha1 == self.hasher.hexdigest(), "UploadEnd sha1 differs from the DATA's")
                check(self.declared in (None, size), "UploadEnd size differs from PUT's")
                self.finish()
            case Abort():
                check(self.uploading, "Abort outside an upload")
                self.finish()
            case requests.Hello(version, _, _):
                check(not self.uploading, "HELLO inside an upload")
                check(version == 1, f"HELLO version {version} accepted")
            case requests.Get(key, offset, length):
                check(not self.uploading, "GET inside an upload")
                check_key(key)
                check(offset is None or offset >= 0, "negative offset")
                check(length is None or length >= 0, "negative length")
            case requests.Stat(key) | requests.Delete(key):
                check(not self.uploading, "request inside an upload")
                check_key(key)
            case requests.List(_, _, limit):
                check(not self.uploading, "LIST inside an upload")
                check(1 <= limit <= requests.MAX_LIST_LIMIT, f"LIST limit {limit}")
            case requests.Ping(payload):
                check(not self.uploading, "PING inside an upload")
                obj = json.loads(payload.decode("utf-8"))
                check(isinstance(obj, dict), "PING payload not an object")
            case requests.Resume(upload_id):
                check(not self.uploading, "RESUME inside an upload")
                check(1 <= len(upload_id) <= MAX_ID, f"upload_id of {len(upload_id)} characters")
            case requests.Subscribe():
                check(not self.uploading, "SUBSCRIBE inside an upload")
            case _:
                raise ContractViolation(f"unknown event {event!r}")

    def error(self, exc: ProtocolError) -> None:
        check(not self.failed, f"{exc!r} after a fatal error")
        check(not self.closed, f"{exc!r} after CLOSED")
        check(isinstance(exc.code, ErrorCode), f"{exc!r} has no wire code")
        # The server sends exactly this; it must encode (JSON, under 64 KiB).
        encode_control(FrameType.ERROR, exc.payload())
        if self.hello_required and not self.greeted:
            check(exc.fatal, f"non-fatal {exc!r} before HELLO")
        if exc.fatal:
            self.failed = True
            self.finish()
        elif self.uploading:
            codes = (ErrorCode.SIZE_MISMATCH, ErrorCode.CHECKSUM_MISMATCH)
            check(exc.code in codes, f"non-fatal {exc!r} inside an upload")
            if exc.code is ErrorCode.CHECKSUM_MISMATCH:
                check(exc.extra.get("actual") == self.hasher.hexdigest(), "wrong 'actual'")
            else:
                check(self.declared != self.received, "size_mismatch on a matching size")
            self.finish()
        else:
            codes = (ErrorCode.BAD_REQUEST, ErrorCode.BAD_KEY)
            check(exc.code in codes, f"non-fatal {exc!r} outside an upload")


def check_key(key: str) -> None:
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise ContractViolation("a key without a UTF-8 form passed") from None
    check(1 <= size <= requests.MAX_KEY_BYTES, f"key of {size} bytes passed")
    check(not any(ord(c) < 0x20 or ord(c) == 0x7F for c in key), "key with a control char")


def run_connection(case: Case) -> None:
    conn = ServerConnection(case.limits, hello_required=case.hello_required)
    model = ConnModel(case.limits, case.hello_required)
    budget = sum(len(piece) for piece in case.pieces) + 16
    for piece in case.pieces:
        conn.receive_data(piece)
        budget = drain_connection(conn, model, budget, final=False)
    if case.eof:
        conn.receive_data(b"")
        drain_connection(conn, model, budget, final=True)


def drain_connection(conn: ServerConnection, model: ConnModel, budget: int, *, final: bool) -> int:
    """Take events until NEED_DATA or CLOSED; each event costs at least one header."""
    while True:
        budget -= 1
        check(budget >= 0, "next_event makes no progress")
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            model.error(exc)
            continue
        if event is NEED_DATA:
            check(not final or model.failed, "NEED_DATA after the end of input")
            return budget
        if event is CLOSED:
            check(final and not model.failed, "CLOSED before the end of input or after an error")
            model.closed = True
            return budget
        model.event(event)


def run_decoder(case: Case, accept: frozenset[FrameType]) -> None:
    decoder = FrameDecoder(max_data=case.limits.max_frame, accept=accept)
    stream = b"".join(case.pieces)
    rebuilt = bytearray()
    try:
        for piece in [*case.pieces, *([b""] if case.eof else [])]:
            decoder.receive_data(piece)
            while True:
                got = decoder.next_frame()
                if got is NEED_DATA:
                    check(bool(piece), "NEED_DATA after the end of input")
                    break
                if got is CLOSED:
                    check(not piece, "CLOSED before the end of input")
                    check(bytes(rebuilt) == stream, "CLOSED with bytes left over")
                    break
                check(isinstance(got, Frame), f"next_frame returned {got!r}")
                assert isinstance(got, Frame)
                check_frame(got, accept, case.limits.max_frame)
                rebuilt += frame_bytes(got.type, got.payload)
                check(stream.startswith(rebuilt), "frames are not the bytes that came in")
    except ProtocolError as exc:
        check(exc.fatal and exc.code is ErrorCode.BAD_FRAME, f"decoder raised {exc!r}")


def check_frame(frame: Frame, accept: frozenset[FrameType], max_data: int) -> None:
    check(frame.type in accept, f"{frame.type.name} passed in the wrong direction")
    if frame.type is FrameType.DATA:
        check(len(frame.payload) <= max_data, "DATA over its limit")
    elif frame.type is FrameType.END:
        check(len(frame.payload) in (SHA1_SIZE, SHA1_HEX_SIZE), "END of a bad length")
    else:
        check(len(frame.payload) <= MAX_CONTROL, "control payload over 64 KiB")
    with_error(lambda: run_payload(frame))


def run_payload(frame: Frame) -> None:
    if frame.type in CONTROL_TYPES:
        obj = decode_control(frame)
        check(isinstance(obj, dict), "decode_control returned a non-object")
    if frame.type is FrameType.END or frame.type not in CONTROL_TYPES:
        digest = decode_digest(frame.payload)
        check(len(digest) == SHA1_SIZE, "decode_digest returned a wrong length")
        if len(frame.payload) == SHA1_HEX_SIZE:
            check(digest.hex() == frame.payload.decode().lower(), "hex digest misread")


def with_error(step: Callable[[], None]) -> None:
    """Run ``step``; a ProtocolError is fine if it is a fatal bad_frame."""
    try:
        step()
    except ProtocolError as exc:
        check(exc.fatal and exc.code is ErrorCode.BAD_FRAME, f"{exc!r}")


def run_one(data: bytes) -> None:
    """One fuzz input (layout in the module docstring); raises on a contract violation."""
    target, hello_required, limits, cuts, eof, body = split_input(data)
    if target in (TARGET_BUILT, TARGET_BUILT_2):
        body = Builder().build(body)
    case = Case(target, hello_required, limits, pieces(body, cuts), eof)
    match target:
        case 0 | 1 | 6 | 7:
            run_connection(case)
        case 2:
            run_decoder(case, CLIENT_TYPES)
        case 3:
            run_decoder(case, SERVER_TYPES)
        case 4:
            with_error(lambda: run_payload(Frame(FrameType.END, body)))
        case _:
            frame_type = TYPES[body[0] % len(TYPES)] if body else FrameType.PUT
            with_error(lambda: run_payload(Frame(frame_type, body[1:])))


# -- seeds ------------------------------------------------------------------------


def seeds() -> Iterator[bytes]:
    """Valid and nearly valid inputs for every target: a start the mutator can build on."""
    digest = hashlib.sha1(b"hello").digest()
    upload = [
        control_bytes(FrameType.PUT, {"key": "a/b", "size": 5, "ttl": 60}),
        frame_bytes(FrameType.DATA, b"he"),
        frame_bytes(FrameType.DATA, b"llo"),
        frame_bytes(FrameType.END, digest),
    ]
    requests_ = [
        control_bytes(FrameType.HELLO, {"version": 1, "token": "t", "client": "c"}),
        control_bytes(FrameType.GET, {"key": "a/b", "offset": 1, "length": 2}),
        control_bytes(FrameType.STAT, {"key": "a/b"}),
        control_bytes(FrameType.DELETE, {"key": "a/b"}),
        control_bytes(FrameType.LIST, {"prefix": "a", "cursor": "a/a", "limit": 10}),
        control_bytes(FrameType.PING, {"x": [1, 2]}),
        frame_bytes(FrameType.PING, b""),
    ]
    aborted = [control_bytes(FrameType.PUT, {"key": "k"}), frame_bytes(FrameType.DATA, b"x")]
    aborted.append(frame_bytes(FrameType.ABORT, b"{}"))
    hexed = [control_bytes(FrameType.PUT, {"key": "h"}), frame_bytes(FrameType.DATA, b"hello")]
    hexed.append(frame_bytes(FrameType.END, digest.hex().upper().encode()))
    streams = [
        b"".join(upload),
        b"".join(requests_),
        b"".join(aborted),
        b"".join(hexed),
        b"".join(requests_[:1] + upload + requests_[1:]),
    ]
    for stream in streams:
        for hello in (False, True):
            yield encode_input(TARGET_CONN, stream, hello_required=hello)
            yield encode_input(TARGET_CONN, stream, hello_required=hello, cuts=(1, 7, 3), eof=False)
    yield encode_input(TARGET_CLIENT_DECODER, streams[4], max_frame=0, cuts=(5,))
    reply = [
        control_bytes(FrameType.OK, {"key": "a", "size": 5}),
        frame_bytes(FrameType.DATA, b"hello"),
        frame_bytes(FrameType.END, digest),
        control_bytes(FrameType.ERROR, {"code": "not_found", "fatal": False}),
    ]
    yield encode_input(TARGET_SERVER_DECODER, b"".join(reply), cuts=(2, 2))
    yield encode_input(TARGET_DIGEST, digest)
    yield encode_input(TARGET_DIGEST, digest.hex().encode())
    for frame in [*requests_, control_bytes(FrameType.PUT, {"key": "k", "size": 1})]:
        frame_type = frame[0]
        yield encode_input(TARGET_CONTROL, bytes([TYPES.index(frame_type)]) + frame[5:])
    ops = [
        bytes([0x1F, 1]) + b"k",  # PUT with size filled in at END
        bytes([2, 3]) + b"abc",  # DATA
        bytes([2, 0]),  # empty DATA
        bytes([13]),  # END, lower hex
        bytes([0x0F, 2]) + b"k2",  # PUT
        bytes([9, 0]),  # ABORT
        bytes([0x3F, 1]) + b"g",  # GET
        bytes([0x6F, 1]) + b"l",  # LIST
        bytes([0x0F, 1]) + b"z",
        bytes([2, 2]) + b"zz",
        bytes([12]),  # END, raw
    ]
    for hello in (False, True):
        yield encode_input(
            TARGET_BUILT, bytes([0x2F, 1]) + b"t" + b"".join(ops), hello_required=hello
        )
    yield encode_input(TARGET_BUILT, b"".join(ops), max_frame=0, max_file_size=1, cuts=(3, 9))


# -- engines ----------------------------------------------------------------------


def save_crash(data: bytes, artifacts: Path) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    path = artifacts / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


class Atheris:
    """The few atheris calls we make, typed (atheris ships no stubs)."""

    def __init__(self, module: types.ModuleType) -> None:
        self._module = module

    @classmethod
    def load(cls) -> Atheris | None:
        try:
            return cls(importlib.import_module("atheris"))
        except ImportError:
            return None

    def instrument(self, prefix: str) -> int:
        """Coverage and comparison tracing for every function of modules under ``prefix``."""
        count = 0
        for name, module in list(sys.modules.items()):
            if module is None or not (name == prefix or name.startswith(prefix + ".")):
                continue
            for obj in vars(module).values():
                functions: list[object] = []
                if isinstance(obj, types.FunctionType) and obj.__module__ == name:
                    functions.append(obj)
                elif isinstance(obj, type) and obj.__module__ == name:
                    for attr in vars(obj).values():
                        if isinstance(attr, property):
                            functions += [attr.fget, attr.fset]
                        elif isinstance(attr, staticmethod | classmethod):
                            functions.append(attr.__func__)
                        else:
                            functions.append(attr)
                for function in functions:
                    if isinstance(function, types.FunctionType):
                        self._module.instrument_func(function)
                        count += 1
        return count

    def fuzz(self, argv: list[str], test_one_input: Callable[[bytes], None]) -> None:
        self._module.Setup(argv, test_one_input)
        self._module.Fuzz()


def worker(argv: list[str], artifacts: Path) -> None:
    """Inside the child: instrument protocol/, then let libFuzzer drive :func:`run_one`."""
    engine = Atheris.load()
    assert engine is not None
    print(f"INFO: instrumented {engine.instrument('protocol')} protocol functions", flush=True)
    runs = 0

    def test_one_input(data: bytes) -> None:
        nonlocal runs
        runs += 1
        try:
            run_one(data)
        except Exception:
            traceback.print_exc()
            path = save_crash(data, artifacts)
            print(f"CRASH after {runs} runs: input saved to {path}", file=sys.stderr, flush=True)
            os._exit(1)

    engine.fuzz(argv, test_one_input)


_RUNS = re.compile(r"^stat::number_of_executed_units:\s*(\d+)")


def run_atheris(seconds: int, corpus: Path | None, artifacts: Path) -> int:
    """Run the worker as a child: its exit code and time limit are ours."""
    with tempfile.TemporaryDirectory(prefix="valise-fuzz-") as tmp:
        seed_dir = Path(tmp) / "seeds"
        seed_dir.mkdir()
        for data in seeds():
            (seed_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)
        work = corpus or Path(tmp) / "corpus"
        work.mkdir(parents=True, exist_ok=True)
        args = [
            f"-max_total_time={seconds}",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-max_len=16384",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            str(work),
            str(seed_dir),
        ]
        artifacts.mkdir(parents=True, exist_ok=True)
        before = set(artifacts.iterdir())
        command = [
            sys.executable,
            "-m",
            "tests.tools.fuzz",
            "--worker",
            "--artifacts",
            str(artifacts),
        ]
        started = time.monotonic()
        runs = 0
        proc = subprocess.Popen(
            [*command, "--", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        # libFuzzer stops itself at -max_total_time; this is in case it does not.
        watchdog = threading.Timer(seconds + 60, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                # Keep libFuzzer's pulses and summary; skip its NEW/REDUCE lines and dictionary.
                if line.startswith("#") and "pulse" not in line and "DONE" not in line:
                    continue
                if not line.startswith('"'):
                    sys.stdout.write(line)
                match = _RUNS.match(line)
                if match:
                    runs = int(match.group(1))
            code = proc.wait(timeout=max(30, seconds))
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=10)
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        new = sorted(set(artifacts.iterdir()) - before)
        elapsed = time.monotonic() - started
        if not any(artifacts.iterdir()):
            artifacts.rmdir()  # made only in case of a crash
    if code == 0 and not new:
        print(f"fuzz: no crash in {runs} runs, {elapsed:.0f} s (atheris)")
        return 0
    print(f"fuzz: CRASH (atheris exit code {code}); inputs: {[str(p) for p in new]}")
    return 1


def run_hypothesis(seconds: int, artifacts: Path) -> int:
    """A time-bounded random fuzz loop, for machines where atheris does not install."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    seed_list = list(seeds())
    inputs = st.one_of(
        st.binary(max_size=4096),
        st.sampled_from(seed_list),
        st.builds(mutate, st.sampled_from(seed_list), st.binary(max_size=64), st.integers(0, 99)),
    )
    last: list[bytes] = [b""]
    runs = 0
    batch = 500

    @settings(
        max_examples=batch,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs)
    def fuzz_batch(data: bytes) -> None:
        last[0] = data
        run_one(data)

    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            fuzz_batch()
            runs += batch
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"fuzz: CRASH; input saved to {save_crash(last[0], artifacts)}")
        return 1
    print(f"fuzz: no crash in about {runs} runs, {seconds} s (hypothesis)")
    return 0


def mutate(seed: bytes, noise: bytes, where: int) -> bytes:
    """Overwrite part of a seed (past its header bytes) with noise."""
    if len(seed) <= 2:
        return seed + noise
    at = 2 + where * (len(seed) - 2) // 100
    return seed[:at] + noise + seed[at + len(noise) // 2 :]


def replay(paths: Sequence[Path]) -> int:
    failed = 0
    for path in paths:
        try:
            run_one(path.read_bytes())
        except Exception:
            traceback.print_exc()
            print(f"{path}: CRASH")
            failed += 1
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tools.fuzz", description=DESCRIPTION)
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz (default 60)")
    parser.add_argument("--corpus", type=Path, help="libFuzzer corpus dir to load and grow")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS, help="crash inputs")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--replay", type=Path, nargs="+", help="run saved inputs and stop")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker([sys.argv[0], *args.libfuzzer], args.artifacts)
        return 0
    if args.replay:
        return replay(args.replay)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if Atheris.load() is not None else "hypothesis"
    if engine == "atheris":
        if Atheris.load() is None:
            parser.error("atheris is not installed (pip install atheris)")
        return run_atheris(args.seconds, args.corpus, args.artifacts.resolve())
    if args.corpus:
        print("fuzz: --corpus is only used by atheris", file=sys.stderr)
    return run_hypothesis(args.seconds, args.artifacts)


if __name__ == "__main__":
    sys.exit(main())
