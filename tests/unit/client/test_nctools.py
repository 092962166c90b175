"""Unit tests for client/nctools.py: ``decode`` describes server frames and checks END."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from client.nctools import decode_stream
from client.wire import HEADER, FrameType, encode_control, encode_data, encode_end
from tests.unit.client.frames import SHA_EMPTY, join


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
