"""Unit tests for tests/tools/py38.py: what breaks client/ on Python 3.8 is found, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools import py38

HEADER = "from __future__ import annotations\nimport os\nfrom collections.abc import Callable\n"


def lines(source: str) -> list[int]:
    return [f.line for f in py38.check_source(Path("m.py"), source)]


@pytest.mark.parametrize(
    "statement",
    [
        "Bytes = bytes | bytearray",
        "Maybe = int | None",
        "Progress = Callable[[int], None]",
        "Table = dict[str, int]",
        "Path = os.PathLike[str]",
        "ok = isinstance(x, KeyError | ValueError)",
        "y = cast(list[int], x)",
        "class D(dict[str, int]): pass",
        "def f(x=list[int]): pass",
    ],
)
def test_run_time_constructs_newer_than_3_8_are_found(statement: str) -> None:
    assert lines(HEADER + statement + "\n") == [4]


@pytest.mark.parametrize(
    "statement",
    [
        "def f(x: int | None, y: dict[str, int]) -> Callable[[int], None]: ...",
        "x: list[int] | None = None",
        "ok = isinstance(x, (KeyError, ValueError))",
        "flags = os.O_RDONLY | os.O_BINARY",
        "mask = a | b",
        "y = cast('list[int]', x)",
        "if TYPE_CHECKING:\n    Value = str | None",
    ],
)
def test_annotations_and_ordinary_expressions_pass(statement: str) -> None:
    assert lines(HEADER + statement + "\n") == []


def test_annotations_count_without_the_future_import() -> None:
    source = "def f(x: int | None) -> None: ...\ny: dict[str, int] = {}\n"
    assert lines(source) == [1, 2]


def test_the_client_passes(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[3]
    assert py38.main([str(root / "client")]) == 0
    assert capsys.readouterr().out == ""
