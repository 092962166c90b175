"""Run by test_client_pythons.py under each CPython from 3.8: the client against a real server.

``python pythons_roundtrip.py HOST:PORT PREFIX WORKDIR``, with the repository
on ``PYTHONPATH``. Exercises the command line (``client.cli.main`` in this
process), the blocking and the asyncio library, each on a file of several
chunks, checking every SHA-1. Prints ``round trip ok`` last; any failure is
an exception (exit 1) or an ``AssertionError`` naming the step.

Python 3.8 syntax: ruff and vermin hold this file to it, like client/.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import sys
from typing import Any

from client import AsyncClient, Client, NotFound
from client.cli import main
from client.loadtest import main as load_main

CHUNK = 64 * 1024


def cli(server: str, *args: str) -> tuple[int, str]:
    """``valise ARGS`` in this process: (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--server", server, "-q", *args])
    return code, out.getvalue()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def command_line(server: str, prefix: str, work: str, data: bytes) -> None:
    src = os.path.join(work, "scan.bin")
    with open(src, "wb") as fh:
        fh.write(data)
    key = prefix + "cli/scan.bin"
    code, out = cli(server, "ping", "--json")  # the blocking probe, not the asyncio client
    assert code == 0 and json.loads(out)["server"]["version"] == 1, ("ping", code, out)
    code, out = cli(server, "put", src, key, "--json")
    assert code == 0, ("put", code)
    assert json.loads(out)["sha1"] == sha1(data), "put sha1"
    code, out = cli(server, "stat", key, "--json")
    assert code == 0 and json.loads(out)["size"] == len(data), ("stat", code, out)
    code, out = cli(server, "ls", prefix + "cli/", "--json")
    assert [json.loads(line)["key"] for line in out.splitlines()] == [key], ("ls", out)
    copy = os.path.join(work, "copy.bin")
    assert cli(server, "get", key, "-o", copy)[0] == 0, "get"
    with open(copy, "rb") as fh:
        assert sha1(fh.read()) == sha1(data), "get bytes"
    assert cli(server, "rm", key)[0] == 0, "rm"
    assert cli(server, "stat", key)[0] == 3, "stat after rm"


def study(server: str, prefix: str, work: str) -> None:
    """``put -r`` and ``get -r`` of a few files on two connections."""
    files = {"s1/a.dcm": os.urandom(CHUNK + 1), "s1/b.dcm": b"", "s 2/c.dcm": b"c"}
    for rel, data in files.items():
        path = os.path.join(work, "study", *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    up = cli(server, "put", "-r", os.path.join(work, "study"), prefix + "study", "--parallel", "2")
    assert up[0] == 0, ("put -r", up)
    out = os.path.join(work, "copy")
    assert cli(server, "get", "-r", prefix + "study", "-o", out)[0] == 0, "get -r"
    for rel, data in files.items():
        with open(os.path.join(out, *rel.split("/")), "rb") as fh:
            assert fh.read() == data, ("get -r bytes", rel)


def agent(server: str, prefix: str, work: str) -> None:
    """``watch --once``: a plain file goes, a cut-short DICOM file waits."""
    folder = os.path.join(work, "export")
    os.makedirs(folder)
    with open(os.path.join(folder, "t1.nii"), "wb") as fh:
        fh.write(b"nifti" * 1000)
    with open(os.path.join(folder, "IMG1.dcm"), "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x40\x00")  # cut in group 2
    state = os.path.join(work, "state.json")
    args = ["watch", folder, "--once", "--settle", "0", "--prefix", prefix + "w/", "--state", state]
    assert cli(server, *args)[0] == 0, "watch --once"
    _, out = cli(server, "ls", prefix + "w/", "--json")
    assert [json.loads(line)["key"] for line in out.splitlines()] == [prefix + "w/t1.nii"], out


def load(server: str, prefix: str) -> None:
    """A short verified load test: every byte of every GET checked, all keys removed."""
    args = ["--server", server, "--count", "40", "--clients", "2", "--sizes", "4KiB:1"]
    assert load_main([*args, "--quiet", "--prefix", prefix + "load/"]) == 0, "loadtest"


def blocking(host: str, port: int, prefix: str, data: bytes) -> None:
    key = prefix + "sync/scan.bin"
    with Client(host, port, timeout=10) as valise:
        info = valise.put(key, data)
        assert info["sha1"] == sha1(data), "sync put"
        sink = io.BytesIO()
        valise.get(key, sink)
        assert sink.getvalue() == data, "sync get"
        assert [f["key"] for f in valise.list(prefix + "sync/")] == [key], "sync list"
        assert valise.delete(key) is True, "sync delete"
        try:
            valise.stat(key)
        except NotFound:
            pass
        else:
            raise AssertionError("sync stat after delete")


async def asynchronous(host: str, port: int, prefix: str, data: bytes) -> None:
    keys = [prefix + "aio/" + str(i) for i in range(3)]
    async with AsyncClient(host, port, timeout=10) as valise:
        # Concurrent calls on one client share its connection through its lock.
        infos: list[Any] = await asyncio.gather(*(valise.put(k, data) for k in keys))
        assert {i["sha1"] for i in infos} == {sha1(data)}, "aio put"
        sink = io.BytesIO()
        await valise.get(keys[1], sink)
        assert sink.getvalue() == data, "aio get"
        listed = [f["key"] async for f in valise.list(prefix + "aio/", limit=2)]
        assert listed == keys, ("aio list", listed)
        for k in keys:
            assert await valise.delete(k), "aio delete"


def run(server: str, prefix: str, work: str) -> None:
    host, _, port = server.rpartition(":")
    data = os.urandom(3 * CHUNK + 123)
    command_line(server, prefix, work, data)
    study(server, prefix, work)
    agent(server, prefix, work)
    load(server, prefix)
    blocking(host, int(port), prefix, data)
    asyncio.run(asynchronous(host, int(port), prefix, data))


if __name__ == "__main__":
    run(*sys.argv[1:4])
    print("round trip ok", sys.version.split()[0])
