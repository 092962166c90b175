"""Unit tests for protocol/export.py: client/_protocol.py is the server's constants, current."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from client import _protocol as generated
from protocol import export, frames
from protocol.errors import ErrorCode


def test_generated_file_is_current() -> None:
    on_disk = Path(generated.__file__).read_text(encoding="utf-8")
    assert on_disk == export.render(), (
        "client/_protocol.py is stale: run `python -m protocol.export client/_protocol.py`"
    )


def test_generated_values_are_the_servers() -> None:
    assert generated.HEADER.format == frames.HEADER.format
    assert generated.HEADER_SIZE == frames.HEADER_SIZE
    assert generated.MAX_CONTROL == frames.MAX_CONTROL
    assert generated.MIN_MAX_FRAME == frames.MIN_MAX_FRAME
    assert generated.DEFAULT_MAX_FRAME == frames.DEFAULT_MAX_FRAME
    assert generated.SHA1_SIZE == frames.SHA1_SIZE
    assert generated.SHA1_HEX_SIZE == frames.SHA1_HEX_SIZE
    assert generated.PROTOCOL_VERSION == frames.PROTOCOL_VERSION
    assert {t.name: t.value for t in generated.FrameType} == {
        t.name: t.value for t in frames.FrameType
    }
    assert tuple(c.value for c in ErrorCode) == generated.ERROR_CODES
    for code in ErrorCode:
        assert getattr(generated.ErrorCode, code.name) == code.value


def test_generated_file_is_python_38() -> None:
    # client/ is vendored into older Pythons; the generated part must not be the obstacle.
    ast.parse(export.render(), feature_version=(3, 8))


def test_main_prints_or_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main([]) == 0
    assert capsys.readouterr().out == export.render()
    target = tmp_path / "_protocol.py"
    assert export.main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == export.render()
    assert export.main(["--help"]) == 2
    assert "usage" in capsys.readouterr().err
