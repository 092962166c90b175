"""One file to copy: valise.pyz on the oldest and newest Python present; the wheel is `valise`.

The archive is built exactly as ``make client-pyz`` builds it and run as a
person on a scanner console would: ``python valise.pyz put ...``, against a
real server, with nothing on ``PYTHONPATH``. The wheel is built from a copy
of the sources and imported straight from the ``.whl`` file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import pyz
from storage.embedded import EmbeddedValkey
from tests.integration.test_client_pythons import NEEDS, SUPPORTED, TOO_OLD, interpreter
from tests.support.harness import ROOT, reap, start_process


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    proc, port = start_process(valkey_server.url, "--chunk-size", "64KiB", "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "valise.pyz"
    result = subprocess.run(
        [sys.executable, "-m", "client.pyz", str(out)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out


def bare_env() -> dict[str, str]:
    """Nothing of the checkout or the venv: only what is in the archive can be imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("VALISE_TOKEN", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def present(minors: tuple[str, ...]) -> list[tuple[str, Path]]:
    return [(m, p) for m in minors if (p := interpreter(m)) is not None]


def ends() -> list[str]:
    """The oldest and the newest supported Python present (the same one if only one)."""
    found = [m for m, _ in present(SUPPORTED)]
    return sorted({found[0], found[-1]}, key=SUPPORTED.index) if found else []


def test_archive_holds_the_client_as_valise_and_is_reproducible(
    archive: Path, tmp_path: Path
) -> None:
    assert archive.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
        main = z.read("__main__.py").decode()
    assert names[0] == "__main__.py"
    assert {"valise/__init__.py", "valise/cli.py", "valise/_protocol.py"} <= set(names)
    assert all(n == "__main__.py" or n.startswith("valise/") for n in names)
    assert not any("__pycache__" in n or n == "valise/pyz.py" for n in names)
    assert main == pyz.MAIN
    again = pyz.build(tmp_path / "again.pyz")
    assert again.read_bytes() == archive.read_bytes()


@pytest.mark.parametrize("which", [0, -1], ids=["oldest", "newest"])
def test_archive_round_trip(
    which: int, archive: Path, port: int, prefix: str, tmp_path: Path
) -> None:
    if not ends():
        pytest.skip(f"no CPython among {SUPPORTED} on this machine")
    minor = ends()[which]
    python = interpreter(minor)
    assert python is not None
    copy = tmp_path / "valise.pyz"  # as copied onto a console: alone in its folder
    shutil.copy(archive, copy)
    data = os.urandom(200_000)
    (tmp_path / "t1.nii").write_bytes(data)

    def valise(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), str(copy), "--server", f"127.0.0.1:{port}", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=bare_env(),
            timeout=60,
            check=False,
        )

    put = valise("put", "t1.nii", prefix + "t1.nii", "--json")
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["sha1"] == hashlib.sha1(data).hexdigest()
    got = valise("get", prefix + "t1.nii", "-o", "copy.nii")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "copy.nii").read_bytes() == data
    assert valise("stat", prefix + "missing").returncode == 3
    assert valise("--help").stdout.startswith("usage: valise ")


@pytest.mark.parametrize("minor", TOO_OLD)
def test_archive_on_an_older_python_says_what_it_needs(minor: str, archive: Path) -> None:
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"no CPython {minor} on this machine")
    result = subprocess.run(
        [str(python), str(archive), "ping"],
        capture_output=True,
        text=True,
        env=bare_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{NEEDS} (this is Python {minor}.")


def test_wheel_installs_package_valise_and_command_valise(port: int, tmp_path: Path) -> None:
    # A copy of what the wheel is built from: the build leaves nothing in the checkout.
    # It holds the server too (valise[server]), whose pins are requirements.txt.
    src = tmp_path / "src"
    for package in ("client", "service", "protocol", "storage"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "server.py"):
        shutil.copy(ROOT / name, src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = tmp_path.glob("valise-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = "\n".join(
            z.read(n).decode() for n in names if n.endswith(("entry_points.txt", "METADATA"))
        )
    assert "valise/cli.py" in names and "valise/loadtest/cli.py" in names
    assert not any(n.startswith("client/") for n in names)
    assert "valise = valise.cli:main" in meta
    assert "Requires-Python: >=3.8" in meta

    found = present(SUPPORTED)
    python = found[0][1] if found else Path(sys.executable)
    ping = subprocess.run(
        [str(python), "-m", "valise", "--server", f"127.0.0.1:{port}", "ping", "--json"],
        capture_output=True,
        text=True,
        env={**bare_env(), "PYTHONPATH": str(wheel)},  # a pure wheel is an importable zip
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout)["server"]["version"] == 1
