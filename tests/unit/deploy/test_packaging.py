"""pyproject.toml: what the wheel holds and what each install pulls in."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from tests.support.harness import ROOT

#: Top-level server packages; client/ is installed as `valise`.
SERVER_PACKAGES = ("service", "protocol", "storage")


def _pyproject() -> dict[str, Any]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(pyproject)


def _package_dirs(top: Path) -> set[str]:
    return {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in top.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }


def test_the_wheel_holds_every_server_and_client_package() -> None:
    tool = _pyproject()["tool"]["setuptools"]
    listed = set(tool["packages"])
    wanted = set().union(*(_package_dirs(ROOT / top) for top in SERVER_PACKAGES))
    wanted |= {"valise" + name.removeprefix("client") for name in _package_dirs(ROOT / "client")}
    assert listed == wanted, "a package directory is missing from (or stale in) pyproject.toml"
    assert tool["py-modules"] == ["server"]
    assert tool["package-dir"] == {"valise": "client"}


def test_the_client_needs_nothing_and_the_server_extra_is_requirements_txt() -> None:
    pyproject = _pyproject()
    project = pyproject["project"]
    assert "dependencies" not in project, "the client (scanner consoles) must stay stdlib-only"
    assert project["dynamic"] == ["optional-dependencies"]
    extras = pyproject["tool"]["setuptools"]["dynamic"]["optional-dependencies"]
    assert extras == {"server": {"file": ["requirements.txt"]}}
    assert project["scripts"] == {"valise": "valise.cli:main", "valise-server": "server:main"}


def test_requirements_txt_is_plain_requirements_setuptools_can_read() -> None:
    # setuptools' file: directive takes requirement lines and whole-line
    # comments, not pip options (-r, --hash) nor trailing comments.
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert not line.startswith("-"), line
            assert "#" not in line, line
            assert "==" in line, f"not pinned: {line}"
