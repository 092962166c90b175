"""The command line end to end: ``python -m client ...`` against a real server process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import keys
from storage.embedded import EmbeddedValkey
from tests.support.harness import ROOT, reap, start_process
from tests.support.ports import free_port

CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def port(valkey_server: EmbeddedValkey) -> Iterator[int]:
    """One real server process for the module (small chunks: damage one of several)."""
    proc, port = start_process(valkey_server.url, "--chunk-size", "64KiB", "--shutdown-grace", "1")
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


def cli(
    port: int,
    *args: str,
    stdin: bytes | None = None,
    cwd: Path = ROOT,
    python: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI as a user would: stdout/stderr are pipes, not a TTY.

    ``python``: options for the interpreter (``-X importtime``).
    """
    env = {**os.environ, "VALISE_SERVER": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    env.pop("VALISE_TOKEN", None)
    return subprocess.run(
        [sys.executable, *python, "-m", "client", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def sha1_file(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def no_progress(stderr: bytes) -> None:
    """Progress bars redraw with \\r and ANSI erase; never on a non-TTY stderr."""
    assert b"\r" not in stderr
    assert b"\x1b[" not in stderr
    assert b"MB/s" not in stderr


def nifti1(shape: tuple[int, int, int] = (16, 16, 8)) -> bytes:
    """A small valid single-file NIfTI-1 image (int16 voxels), built by hand."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)  # sizeof_hdr
    struct.pack_into("<8h", hdr, 40, 3, *shape, 1, 1, 1, 1)  # dim
    struct.pack_into("<hh", hdr, 70, 4, 16)  # datatype NIFTI_TYPE_INT16, bitpix
    struct.pack_into("<8f", hdr, 76, 1.0, 1.0, 1.0, 1.2, 0.0, 0.0, 0.0, 0.0)  # pixdim
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    struct.pack_into("<ff", hdr, 112, 1.0, 0.0)  # scl_slope, scl_inter
    hdr[123] = 2  # xyzt_units: mm
    struct.pack_into("<hh", hdr, 252, 1, 1)  # qform_code, sform_code: scanner
    hdr[344:348] = b"n+1\x00"
    n = shape[0] * shape[1] * shape[2]
    voxels = struct.pack(f"<{n}h", *((i * 37) % 4096 - 1024 for i in range(n)))
    return bytes(hdr) + b"\x00\x00\x00\x00" + voxels


def test_put_get_roundtrip_random_binary(port: int, prefix: str, tmp_path: Path) -> None:
    src = tmp_path / "scan.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
    key = prefix + "patients/1234/scan.bin"
    put = cli(port, "put", str(src), key, "--json")
    assert put.returncode == 0, put.stderr
    no_progress(put.stderr)
    info = json.loads(put.stdout)
    assert info["key"] == key
    assert info["size"] == src.stat().st_size
    assert info["sha1"] == sha1_file(src)

    out = tmp_path / "out" / "copy.bin"
    out.parent.mkdir()
    got = cli(port, "get", key, "-o", str(out))
    assert got.returncode == 0, got.stderr
    no_progress(got.stderr)
    assert sha1_file(out) == sha1_file(src)
    assert out.read_bytes() == src.read_bytes()
    assert sorted(os.listdir(out.parent)) == ["copy.bin"]

    # Without -o the file is named after the key's last part, in the cwd.
    here = tmp_path / "here"
    here.mkdir()
    got = cli(port, "get", key, cwd=here)
    assert got.returncode == 0, got.stderr
    assert (here / "scan.bin").read_bytes() == src.read_bytes()


def test_nifti_scan_roundtrip_through_stdin_and_stdout(port: int, prefix: str) -> None:
    scan = nifti1()
    assert struct.unpack_from("<i", scan, 0)[0] == 348 and scan[344:348] == b"n+1\x00"
    key = prefix + "t1.nii"
    put = cli(port, "put", "-", key, "--content-type", "application/x-nifti", stdin=scan)
    assert put.returncode == 0, put.stderr
    assert hashlib.sha1(scan).hexdigest() in put.stdout.decode()
    stat = cli(port, "stat", key, "--json")
    assert stat.returncode == 0, stat.stderr
    info = json.loads(stat.stdout)
    assert (info["size"], info["content_type"]) == (len(scan), "application/x-nifti")
    got = cli(port, "get", key, "-o", "-")
    assert got.returncode == 0, got.stderr
    no_progress(got.stderr)
    assert got.stdout == scan
    dims = struct.unpack_from("<8h", got.stdout, 40)
    assert dims[:4] == (3, 16, 16, 8)


def test_put_without_key_uses_file_name_and_stdin_needs_key(
    port: int, prefix: str, tmp_path: Path
) -> None:
    src = tmp_path / (prefix.strip("/") + ".txt")
    src.write_bytes(b"hello valise\n")
    put = cli(port, "put", str(src), "--json")
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["key"] == src.name
    assert cli(port, "rm", src.name).returncode == 0
    assert cli(port, "put", "-", stdin=b"x").returncode == 2


def test_json_outputs_parse(port: int, prefix: str) -> None:
    key = prefix + "j"
    data = b"\x00\x01json\xff" * 100
    put = cli(port, "put", "-", key, "--json", stdin=data)
    stat = cli(port, "stat", key, "--json")
    ping = cli(port, "ping", "--json")
    ls = cli(port, "ls", prefix, "--json")
    rm = cli(port, "rm", key, "--json")
    for result in (put, stat, ping, ls, rm):
        assert result.returncode == 0, result.stderr
    assert json.loads(put.stdout)["sha1"] == hashlib.sha1(data).hexdigest()
    assert json.loads(stat.stdout)["size"] == len(data)
    assert json.loads(ping.stdout)["server"]["version"] == 1
    assert [json.loads(line)["key"] for line in ls.stdout.splitlines()] == [key]
    assert json.loads(rm.stdout) == {"key": key, "deleted": True}


def test_ping_says_pong_without_importing_asyncio(port: int) -> None:
    # Issue 21: a probe is mostly start-up, and asyncio was most of that.
    ping = cli(port, "ping", python=("-X", "importtime"))
    assert ping.returncode == 0, ping.stderr
    pong = rf"pong from valise/\S+ at 127\.0\.0\.1:{port} in \d+\.\d ms\n"
    assert re.fullmatch(pong, ping.stdout.decode()), ping.stdout
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in ping.stderr.decode().splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert {"socket", "client.greeting"} <= imported  # the probe ran
    assert not {"asyncio", "ssl", "client.aio"} & imported


def test_exit_code_not_found(port: int, prefix: str, tmp_path: Path) -> None:
    for args in (["get", prefix + "nope", "-o", str(tmp_path / "x")], ["stat", prefix + "nope"]):
        result = cli(port, *args)
        assert result.returncode == 3, result.stderr
        assert b"not_found" in result.stderr
    assert os.listdir(tmp_path) == []
    assert cli(port, "rm", prefix + "nope").returncode == 3


def test_exit_code_cannot_connect(tmp_path: Path) -> None:
    dead = free_port()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for args in (["ping"], ["put", str(src), "k"], ["get", "k", "-o", str(tmp_path / "g")]):
        result = cli(dead, *args, "--retries", "0", "--timeout", "5")
        assert result.returncode == 5, result.stderr
        assert b"connect" in result.stderr
    assert os.listdir(tmp_path) == ["f"]


@pytest.mark.parametrize(
    "args",
    [[], ["nonsense"], ["get"], ["put"], ["ls", "--limit", "many"], ["--server", "x:y", "ping"]],
)
def test_exit_code_usage(port: int, args: list[str]) -> None:
    result = cli(port, *args)
    assert result.returncode == 2, result.stderr
    assert b"usage:" in result.stderr


def test_integrity_failure_exits_4_and_leaves_no_partial_file(
    port: int, prefix: str, tmp_path: Path, vk: Any
) -> None:
    data = os.urandom(4 * CHUNK + 100)
    key = prefix + "damaged.bin"
    assert cli(port, "put", "-", key, stdin=data).returncode == 0
    vid = vk.hget(keys.NamespaceKeys("").meta(key), "vid").decode()
    vk.setrange(keys.chunk_key(vid, 2), 10, b"X" if data[2 * CHUNK + 10] != ord("X") else b"Y")

    target = tmp_path / "dl"
    target.mkdir()
    previous = target / "damaged.bin"
    previous.write_bytes(b"an older good copy")
    result = cli(port, "get", key, "-o", str(previous))
    assert result.returncode == 4, result.stderr
    assert b"corrupt" in result.stderr
    # Atomic get: the old file is intact and no temporary/partial file remains.
    assert sorted(os.listdir(target)) == ["damaged.bin"]
    assert previous.read_bytes() == b"an older good copy"

    fresh = cli(port, "get", key, "-o", str(target / "new.bin"))
    assert fresh.returncode == 4
    assert sorted(os.listdir(target)) == ["damaged.bin"]


def test_ls_follows_pages_in_key_order(port: int, prefix: str) -> None:
    names = [f"{prefix}f{i:02d}" for i in (7, 1, 4, 0, 9, 3, 2)]
    for i, name in enumerate(names):
        assert cli(port, "put", "-", name, "-q", stdin=bytes([i]) * (i + 1)).returncode == 0
    # A neighbour sharing the prefix text but not the prefix is not listed.
    assert cli(port, "put", "-", prefix.rstrip("/") + "-other", "-q", stdin=b"o").returncode == 0
    paged = cli(port, "ls", prefix, "--limit", "2", "--json")
    assert paged.returncode == 0, paged.stderr
    listed = [json.loads(line) for line in paged.stdout.splitlines()]
    assert [info["key"] for info in listed] == sorted(names)
    sizes = {info["key"]: info["size"] for info in listed}
    assert sizes == {name: i + 1 for i, name in enumerate(names)}
    plain = cli(port, "ls", prefix, "--limit", "3")
    assert plain.returncode == 0
    assert [line.rsplit(" ", 1)[1] for line in plain.stdout.decode().splitlines()] == sorted(names)


def test_rm(port: int, prefix: str) -> None:
    key = prefix + "gone"
    assert cli(port, "put", "-", key, stdin=b"bye").returncode == 0
    rm = cli(port, "rm", key)
    assert (rm.returncode, rm.stdout) == (0, f"deleted {key}\n".encode())
    assert cli(port, "stat", key).returncode == 3
    assert cli(port, "rm", key).returncode == 3
    assert cli(port, "ls", prefix, "--json").stdout == b""


def _decode(port: int, raw: bytes, *extra: str) -> tuple[list[dict[str, Any]], int]:
    result = cli(port, "decode", "--json", *extra, stdin=raw)
    return [json.loads(line) for line in result.stdout.splitlines()], result.returncode


def _over_socket(port: int, request: bytes) -> bytes:
    """What ``nc -N`` does: send, half-close, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = bytearray()
        while chunk := sock.recv(65536):
            reply += chunk
    return bytes(reply)


def test_frame_socket_decode_in_python(port: int, prefix: str, tmp_path: Path) -> None:
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello valise\n" * 10000)  # 130 kB: several 64 KiB DATA frames
    key = prefix + "hello.txt"
    frames = cli(port, "frame", "put", key, str(src))
    assert frames.returncode == 0
    assert frames.stdout[:1] == b"\x02"  # PUT
    assert frames.stdout[-45:-40] == b"\x04\x00\x00\x00\x28"  # END, 40 hex characters
    assert frames.stdout[-40:] == sha1_file(src).encode()
    lines, rc = _decode(port, _over_socket(port, frames.stdout))
    assert rc == 0
    assert [line["type"] for line in lines] == ["OK", "OK"]
    assert lines[1]["body"]["sha1"] == sha1_file(src)

    out = tmp_path / "copy.txt"
    request = cli(port, "frame", "get", key).stdout
    lines, rc = _decode(port, _over_socket(port, request), "-o", str(out))
    assert rc == 0
    assert lines[0]["type"] == "OK" and lines[-1]["type"] == "END"
    assert lines[-1]["match"] is True
    assert out.read_bytes() == src.read_bytes()

    missing, rc = _decode(port, _over_socket(port, cli(port, "frame", "stat", key + "x").stdout))
    assert rc == 3  # decode exits as the CLI would for the ERROR it printed
    assert missing[0]["body"]["code"] == "not_found"


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")
def test_frame_nc_decode_pipeline(port: int, prefix: str, tmp_path: Path) -> None:
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello valise\n")
    out = tmp_path / "copy.txt"
    env = {**os.environ, "VALISE_SERVER": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    me = f"{sys.executable} -m client"
    pipe = f"nc -N 127.0.0.1 {port} | {me} decode"
    for command in (
        f"{me} frame put {prefix}nc.txt {src} | {pipe}",
        f"{me} frame get {prefix}nc.txt | {pipe} -o {out}",
    ):
        result = subprocess.run(
            ["/bin/sh", "-c", f"set -e; {command}"],
            capture_output=True,
            cwd=ROOT,
            env=env,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith("OK {")
    assert "DATA 13 bytes" in text
    assert f"END {sha1_file(src)} (matches" in text
    assert out.read_bytes() == b"hello valise\n"
