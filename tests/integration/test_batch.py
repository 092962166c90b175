"""Whole studies: ``put -r`` and ``get -r`` against a real server process.

The study is nibabel's test data (real DICOM, NIfTI, MINC, PAR/REC, GIfTI
files, in their own folders) topped up with generated files to 300, among
them an empty file, names with spaces and non-ASCII letters, and files of
several chunks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client
from storage.embedded import EmbeddedValkey
from tests.integration.test_cli import cli
from tests.support.harness import reap, start_process
from tests.support.ports import free_port

STUDY_FILES = 300
MAX_FILE = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    proc, port = start_process(
        valkey_server.url,
        *("--chunk-size", "64KiB", "--max-file-size", "4MiB", "--shutdown-grace", "1"),
    )
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


def nibabel_data() -> dict[str, Path]:
    """Every file of nibabel's test data folders by relative path (none without nibabel)."""
    spec = importlib.util.find_spec("nibabel")
    if spec is None or spec.origin is None:
        return {}
    package = Path(spec.origin).parent
    return {
        "nibabel/" + p.relative_to(package).as_posix(): p
        for p in sorted(package.rglob("*"))
        if p.is_file() and "data" in p.parent.parts and "tests" in p.parts and p.suffix != ".pyc"
    }


def make_study(root: Path, count: int = STUDY_FILES) -> dict[str, bytes]:
    """Write a study under ``root``; its files by relative path (``/`` separators)."""
    files: dict[str, bytes] = {}
    for rel, path in list(nibabel_data().items())[:count]:
        files[rel] = path.read_bytes()
    rng = random.Random(1234)
    sizes = [0, 1, 64 * 1024, 64 * 1024 + 1, 3 * 64 * 1024 + 5]
    i = 0
    while len(files) < count:
        series = ("series 1", "séries 2", "s3/deep/er")[i % 3]
        size = sizes[i] if i < len(sizes) else rng.randrange(100, 20_000)
        files[f"{series}/IMG {i:04d}.dcm"] = rng.getrandbits(8 * size).to_bytes(size, "little")
        i += 1
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def json_lines(stdout: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_study_goes_up_and_comes_down_bit_for_bit(port: int, prefix: str, tmp_path: Path) -> None:
    files = make_study(tmp_path / "study")
    assert len(files) == STUDY_FILES and b"" in files.values()
    if nibabel_data():
        assert any(data[128:132] == b"DICM" for data in files.values())

    up = cli(port, "put", "-r", str(tmp_path / "study"), prefix + "study", "--json")
    assert up.returncode == 0, up.stderr
    *per_file, last = json_lines(up.stdout)
    assert last["summary"] == {
        **last["summary"],  # type: ignore[dict-item]
        "files": STUDY_FILES,
        "done": STUDY_FILES,
        "failed": 0,
        "not_tried": 0,
    }
    sent = {str(info["key"]): info for info in per_file}
    assert set(sent) == {f"{prefix}study/{rel}" for rel in files}
    for rel, data in files.items():
        assert sent[f"{prefix}study/{rel}"]["sha1"] == hashlib.sha1(data).hexdigest()

    # The prefix is a folder: "study" did not take in a neighbour "study2".
    assert cli(port, "put", "-", prefix + "study2/x", stdin=b"x").returncode == 0
    down = cli(port, "get", "-r", prefix + "study", "-o", str(tmp_path / "copy"), "--parallel", "3")
    assert down.returncode == 0, down.stderr
    assert f"get: {STUDY_FILES} of {STUDY_FILES} files".encode() in down.stdout
    assert tree(tmp_path / "copy") == files


def test_several_files_without_r_and_usage_errors(port: int, prefix: str, tmp_path: Path) -> None:
    for name in ("a.dcm", "b.dcm"):
        (tmp_path / name).write_bytes(name.encode())
    three = cli(port, "put", str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm"), prefix + "pair")
    assert three.returncode == 0, three.stderr
    with Client("127.0.0.1", port) as client:
        assert [f["key"] for f in client.list(prefix)] == [
            prefix + "pair/a.dcm",
            prefix + "pair/b.dcm",
        ]

    folder = cli(port, "put", str(tmp_path), prefix + "x")
    assert folder.returncode == 2
    assert b"is a directory: use put -r" in folder.stderr
    assert cli(port, "put", "-r", str(tmp_path)).returncode == 2
    missing = cli(port, "put", "-r", str(tmp_path / "nope"), prefix)
    assert missing.returncode == 2
    assert b"nope" in missing.stderr
    assert cli(port, "get", "-r", prefix + "nothing-here", "-o", str(tmp_path)).returncode == 3


def test_a_failed_file_does_not_stop_the_others(port: int, prefix: str, tmp_path: Path) -> None:
    study = tmp_path / "study"
    files = make_study(study, count=20)
    (study / "huge.raw").write_bytes(b"\0" * (MAX_FILE + 1))  # over --max-file-size
    result = cli(port, "put", "-r", str(study), prefix, "--parallel", "2")
    assert result.returncode == 1, result.stderr
    assert f"put {prefix}huge.raw".encode() in result.stderr
    assert b"too_large" in result.stderr
    assert b"put: 20 of 21 files" in result.stderr
    assert b"1 failed" in result.stderr
    with Client("127.0.0.1", port) as client:
        assert len(list(client.list(prefix))) == len(files)


def test_server_down_stops_the_batch_with_exit_5(prefix: str, tmp_path: Path) -> None:
    make_study(tmp_path / "study", count=12)
    dead = free_port()
    result = cli(dead, "put", "-r", str(tmp_path / "study"), prefix, "--retries", "0")
    assert result.returncode == 5, result.stderr
    text = result.stderr.decode()
    assert "put: 0 of 12 files" in text
    assert "not tried (stopped: connect_failed" in text


@pytest.mark.parametrize(
    "rel",
    [
        "../evil",
        "a/../../evil",
        "/abs",
        "C:/windows/evil",
        "back\\..\\slash",
        "a//b",
        "./dot",
        "file:stream",
    ],
)
def test_get_r_never_writes_outside_the_folder(
    port: int, prefix: str, tmp_path: Path, rel: str
) -> None:
    with Client("127.0.0.1", port) as client:
        client.put(prefix + "good/scan.dcm", b"good")
        client.put(prefix + rel, b"evil")
    out = tmp_path / "out"
    result = cli(port, "get", "-r", prefix, "-o", str(out))
    assert result.returncode == 1, result.stderr
    assert f"refused {prefix + rel!r}".encode() in result.stderr
    assert tree(tmp_path) == {"out/good/scan.dcm": b"good"}
    assert not Path(os.path.abspath("/evil")).exists()


def test_get_r_does_not_follow_a_link_out_of_the_folder(
    port: int, prefix: str, tmp_path: Path
) -> None:
    with Client("127.0.0.1", port) as client:
        client.put(prefix + "link/f", b"evil")
        client.put(prefix + "ok", b"fine")
    (tmp_path / "outside").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    result = cli(port, "get", "-r", prefix, "-o", str(out), "--json")
    assert result.returncode == 1, result.stderr
    errors = [line for line in json_lines(result.stdout) if "error" in line]
    assert [e["key"] for e in errors] == [prefix + "link/f"]
    assert list((tmp_path / "outside").iterdir()) == []
    assert (out / "ok").read_bytes() == b"fine"
