"""client/ parses and runs on Python 3.8: `python -m tests.tools.py38 client` (run by `make lint`).

vermin (also in `make lint`) finds library calls and syntax newer than 3.8,
but not the two constructs that break the client most often, because under
``from __future__ import annotations`` they are fine in annotations and
fatal everywhere else:

- ``X | Y`` between types (PEP 604, Python 3.10): a type alias, an
  ``isinstance`` tuple, a ``cast``;
- ``list[int]``, ``dict[str, Any]``, ``collections.abc.Callable[...]``,
  ``os.PathLike[str]`` subscripted at run time (PEP 585, Python 3.9).

Annotations are skipped only in modules that import
``from __future__ import annotations`` (elsewhere they are evaluated), and so
is everything under ``if TYPE_CHECKING:``. A module without that import may
not use it in its annotations either: 3.6 and 3.7 must parse the package's
``__init__`` to say which Python is needed, so the check is per module.

Prints ``path:line: problem`` per finding, exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Builtins whose subscription needs Python 3.9.
GENERIC_BUILTINS = frozenset({"dict", "list", "set", "frozenset", "tuple", "type"})
#: Modules whose classes became subscriptable in 3.9 (PEP 585).
GENERIC_MODULES = frozenset({"collections", "collections.abc", "contextlib", "re", "queue"})
#: Other classes that became subscriptable in 3.9, as ``module.Name``.
GENERIC_NAMES = frozenset(
    {
        "os.PathLike",
        "asyncio.Future",
        "asyncio.Task",
        "asyncio.Queue",
        "subprocess.Popen",
        "subprocess.CompletedProcess",
        "functools.partial",
    }
)
#: Names that are types when they stand beside ``|``.
TYPE_NAMES = frozenset(
    {
        "int",
        "str",
        "bytes",
        "bytearray",
        "memoryview",
        "float",
        "bool",
        "complex",
        "object",
        *GENERIC_BUILTINS,
    }
)


class Finding:
    def __init__(self, path: Path, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class _Checker(ast.NodeVisitor):
    def __init__(self, path: Path, tree: ast.Module) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.future = any(
            isinstance(node, ast.ImportFrom)
            and node.module == "__future__"
            and any(alias.name == "annotations" for alias in node.names)
            for node in tree.body
        )
        #: local name -> dotted origin, for ``from os import PathLike`` and friends.
        self.origins: dict[str, str] = {}

    # -- bookkeeping -------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.origins[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            for alias in node.names:
                self.origins[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _dotted(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.origins.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self._dotted(node.value)
            return f"{base}.{node.attr}" if base is not None else None
        return None

    # -- what is skipped -----------------------------------------------------

    def visit_If(self, node: ast.If) -> None:
        name = self._dotted(node.test)
        if name in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _annotation(self, node: ast.expr | None) -> None:
        if node is not None and not self.future:
            self.visit(node)

    def visit_arg(self, node: ast.arg) -> None:
        self._annotation(node.annotation)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.visit(node.args)
        self._annotation(node.returns)
        for statement in node.body:
            self.visit(statement)

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)
        self._annotation(node.annotation)
        if node.value is not None:
            self.visit(node.value)

    # -- what is flagged -----------------------------------------------------

    def _is_generic(self, node: ast.expr) -> bool:
        name = self._dotted(node)
        if name is None:
            return False
        if name in GENERIC_BUILTINS or name in GENERIC_NAMES:
            return True
        module, _, attr = name.rpartition(".")
        return module in GENERIC_MODULES and attr[:1].isupper()

    def _is_type(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Constant) and node.value is None:
            return True
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return self._is_type(node.left) or self._is_type(node.right)
        if isinstance(node, ast.Subscript):
            return True
        name = self._dotted(node)
        if name is None:
            return False
        last = name.rpartition(".")[2]
        class_like = last[:1].isupper() and not last.isupper()  # CapWords, not a CONSTANT
        return (
            name in TYPE_NAMES or name.startswith("typing.") or class_like or self._is_generic(node)
        )

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self._is_generic(node.value):
            self.findings.append(
                Finding(
                    self.path,
                    node.lineno,
                    f"{ast.unparse(node.value)}[...] at run time needs Python 3.9 "
                    "(use typing's alias, or a quoted annotation)",
                )
            )
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.BitOr) and (
            self._is_type(node.left) and self._is_type(node.right)
        ):
            self.findings.append(
                Finding(
                    self.path,
                    node.lineno,
                    f"{ast.unparse(node)} at run time needs Python 3.10 "
                    "(use typing.Union/Optional, or a tuple for isinstance)",
                )
            )
            return
        self.generic_visit(node)


def check_source(path: Path, text: str) -> list[Finding]:
    """Findings for one module's text (3.8's grammar is vermin's job)."""
    tree = ast.parse(text, filename=str(path))
    checker = _Checker(path, tree)
    checker.visit(tree)
    return checker.findings


def python_files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        else:
            yield path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tools.py38", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    findings = []
    for path in python_files(args.paths):
        findings.extend(check_source(path, path.read_text(encoding="utf-8")))
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
