"""Helpers for people talking to the server with ``nc``.

``frame`` writes request frames to stdout; ``decode`` reads server frames from
stdin and prints them readably::

    (python -m client frame put scan.nii scan.nii; sleep 1) \\
        | nc 127.0.0.1 7070 | python -m client decode
    python -m client frame get scan.nii | nc -q 2 127.0.0.1 7070 \\
        | python -m client decode -o copy.nii

``frame`` keeps DATA frames at 64 KiB (no HELLO reply is read, so the
server's ``max_frame`` is unknown) and ends uploads with the hex SHA-1, the
spelling ``sha1sum`` prints. A HELLO goes first when a token is set
(``--token`` / ``VALISE_TOKEN``) or with ``--hello``.

``decode`` prints each frame on a line (``--json``: one JSON object per line).
For END it says whether the digest matches the SHA-1 of the DATA bytes seen
since the last control frame (OK, ERROR; with ``--any`` also PUT and the other
requests). Exit status: 0; 4 when an END did not match; when it printed an
ERROR frame, the CLI's exit code for that error (3 for ``not_found``, 5 for
``busy``...: the first ERROR decides); 1 on malformed or truncated input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
from typing import IO, Any, TextIO

from .console import EXIT_INTEGRITY, exit_code_for
from .errors import ProtocolError, error_from_wire
from .wire import (
    DEFAULT_MAX_DATA_IN,
    NEED_DATA,
    PRE_HELLO_MAX_FRAME,
    PROTOCOL_VERSION,
    SERVER_FRAMES,
    Bytes,
    Frame,
    FrameDecoder,
    FrameType,
    encode_control,
    encode_data,
    encode_end,
)

__all__ = ["decode_stream", "run_decode", "run_frame", "write_frames"]


def run_frame(args: argparse.Namespace) -> int:
    """The ``frame`` command: request frames on stdout."""
    return write_frames(args, sys.stdout.buffer)


def run_decode(args: argparse.Namespace) -> int:
    """The ``decode`` command: server frames from stdin, described on stdout."""
    out: IO[bytes] | None = open(args.output, "wb") if args.output else None  # noqa: SIM115
    try:
        return decode_stream(
            sys.stdin.buffer,
            sys.stdout,
            data_out=out,
            as_json=args.json,
            max_frame=args.max_frame,
            any_frames=args.any,
        )
    finally:
        if out is not None:
            out.close()


def _body(args: argparse.Namespace) -> tuple[FrameType, dict[str, Any]]:
    cmd = args.frame_command
    if cmd == "get":
        body: dict[str, Any] = {"key": args.key}
        if args.offset is not None:
            body["offset"] = args.offset
        if args.length is not None:
            body["length"] = args.length
        return FrameType.GET, body
    if cmd in ("stat", "delete"):
        return FrameType[cmd.upper()], {"key": args.key}
    if cmd == "list":
        body = {"prefix": args.prefix}
        if args.cursor is not None:
            body["cursor"] = args.cursor
        if args.limit is not None:
            body["limit"] = args.limit
        return FrameType.LIST, body
    try:
        payload = json.loads(args.payload)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise SystemExit("valise: ping payload must be a JSON object")
    return FrameType.PING, payload


def write_frames(args: argparse.Namespace, out: IO[bytes]) -> int:
    """The ``frame`` command: request frames on ``out``."""

    def emit(parts: list[Bytes]) -> None:
        for part in parts:
            out.write(part)

    if args.hello or args.token:
        hello: dict[str, Any] = {"version": PROTOCOL_VERSION, "client": "valise-frame"}
        if args.token:
            hello["token"] = args.token
        emit(encode_control(FrameType.HELLO, hello))
    if args.frame_command != "put":
        emit(encode_control(*_body(args)))
        out.flush()
        return 0
    src: IO[bytes] = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    try:
        body: dict[str, Any] = {"key": args.key}
        st = os.fstat(src.fileno())
        if stat.S_ISREG(st.st_mode) and not args.no_size and args.file != "-":
            body["size"] = st.st_size
        if args.ttl is not None:
            body["ttl"] = args.ttl
        if args.content_type is not None:
            body["content_type"] = args.content_type
        emit(encode_control(FrameType.PUT, body))
        sha1 = hashlib.sha1()
        while chunk := src.read(PRE_HELLO_MAX_FRAME):
            sha1.update(chunk)
            emit(encode_data(chunk))
        emit(encode_end(sha1.digest(), hex_digest=True))
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    out.flush()
    return 0


class _Printer:
    """Tracks DATA since the last control frame and prints each frame."""

    def __init__(self, out: TextIO, data_out: IO[bytes] | None, as_json: bool) -> None:
        self.out = out
        self.data_out = data_out
        self.as_json = as_json
        self.sha1 = hashlib.sha1()
        self.count = 0
        self.announced: int | None = None
        self.mismatches = 0
        #: The first ERROR frame's body, if one was printed.
        self.error: dict[str, Any] | None = None

    def line(self, text: str, record: dict[str, Any]) -> None:
        print(json.dumps(record, ensure_ascii=False) if self.as_json else text, file=self.out)

    def frame(self, frame: Frame) -> None:
        name = frame.type.name
        if frame.type is FrameType.DATA:
            self.sha1.update(frame.payload)
            self.count += len(frame.payload)
            if self.data_out is not None:
                self.data_out.write(frame.payload)
            n = len(frame.payload)
            self.line(f"DATA {n} bytes ({self.count} so far)", {"type": name, "bytes": n})
            return
        if frame.type is FrameType.END:
            self.end(frame.digest())
            return
        body = frame.json()
        if frame.type is FrameType.ERROR and self.error is None:
            self.error = body
        self.sha1, self.count = hashlib.sha1(), 0
        length = body.get("length")
        self.announced = length if frame.type is FrameType.OK and isinstance(length, int) else None
        self.line(f"{name} {json.dumps(body, ensure_ascii=False)}", {"type": name, "body": body})

    def end(self, digest: bytes) -> None:
        actual = self.sha1.digest()
        match = digest == actual
        notes = []
        if match:
            notes.append(f"matches SHA-1 of the {self.count} DATA bytes")
        else:
            self.mismatches += 1
            notes.append(f"MISMATCH: SHA-1 of the {self.count} DATA bytes is {actual.hex()}")
        if self.announced is not None and self.announced != self.count:
            self.mismatches += 1
            notes.append(f"SHORT/LONG: OK announced {self.announced} bytes")
        self.line(
            f"END {digest.hex()} ({'; '.join(notes)})",
            {"type": "END", "digest": digest.hex(), "bytes": self.count, "match": match},
        )
        self.sha1, self.count, self.announced = hashlib.sha1(), 0, None


def decode_stream(
    inp: IO[bytes],
    out: TextIO,
    *,
    data_out: IO[bytes] | None = None,
    as_json: bool = False,
    max_frame: int = DEFAULT_MAX_DATA_IN,
    any_frames: bool = False,
) -> int:
    """The ``decode`` command: frames from ``inp`` printed on ``out``."""
    allowed = frozenset(FrameType) if any_frames else SERVER_FRAMES
    decoder = FrameDecoder(max_data=max_frame, allowed=allowed)
    printer = _Printer(out, data_out, as_json)
    read = getattr(inp, "read1", inp.read)
    try:
        while data := read(256 * 1024):
            decoder.receive_data(data)
            while (frame := decoder.next_frame()) is not NEED_DATA:
                assert isinstance(frame, Frame)
                printer.frame(frame)
    except ProtocolError as exc:
        print(f"valise: bad input: {exc.message}", file=sys.stderr)
        return 1
    if decoder.buffered:
        print(f"valise: input ends inside a frame ({decoder.buffered} bytes)", file=sys.stderr)
        return 1
    if printer.mismatches:
        return EXIT_INTEGRITY
    if printer.error is not None:
        return exit_code_for(error_from_wire(printer.error))
    return 0
