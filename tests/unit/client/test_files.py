"""Unit tests for client/files.py: sources that can be re-read, sinks that replace atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from client.files import Sink, Source


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


class _Pipe:
    """A stream that cannot seek, like stdin on a pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._data.read(size)


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
    seekable = io.BytesIO(b"xxabc")
    seekable.seek(2)
    again = Source(seekable)
    assert again.rereadable  # from where it stood, for a retry or a resume
    for _ in range(2):
        assert again.start() is None
        assert _drain(again, 2) == b"abc"
    stream = Source(_Pipe(b"abc"))
    assert not stream.rereadable
    assert stream.start() is None
    assert not stream.consumed
    assert _drain(stream, 2) == b"abc"
    assert stream.consumed
    with pytest.raises(RuntimeError):
        stream.start()
