"""`valise events` and `valise follow` as users run them: real processes, a real server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from protocol.frames import FrameType
from service.connection import Connection
from tests.support.harness import ROOT, Running

pytestmark = pytest.mark.asyncio


class Cli:
    """One ``python -m client ...`` process; its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        assert raw, "the command ended"
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    async def stop(self) -> tuple[int, str]:
        """SIGTERM: the exit code and what it said on stderr."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(self.proc.communicate(), 30)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


@pytest_asyncio.fixture
async def cli(server: Running) -> AsyncIterator[Any]:
    started: list[Cli] = []

    async def start(*args: str) -> Cli:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client",
            *args,
            "--server",
            f"{server.host}:{server.port}",
            "--json",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        started.append(Cli(proc))
        return started[-1]

    yield start
    for one in started:
        if one.proc.returncode is None:
            one.proc.kill()
            await one.proc.communicate()


def subscribed(server: Running) -> list[Connection]:
    return [
        c
        for c in server.server.connections.values()
        if isinstance(c, Connection) and c.subscription is not None
    ]


async def until_subscribed(server: Running) -> Connection:
    for _ in range(300):
        found = subscribed(server)
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError("nobody subscribed")


def slice_bytes(n: int) -> bytes:
    """A small DICOM-like file: 128-byte preamble, DICM, then pixels."""
    rng = random.Random(n)
    return bytes(128) + b"DICM" + rng.randbytes(rng.randrange(500, 6000))


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


async def test_events_prints_each_change(server: Running, prefix: str, cli: Any) -> None:
    events = await cli("events", prefix)
    await until_subscribed(server)
    writer = await server.client()
    stored = (await writer.put(prefix + "a", b"x")).body
    assert (await writer.put("elsewhere/" + prefix, b"y")).ok
    assert (await writer.request(FrameType.DELETE, {"key": prefix + "a"})).ok
    first, second = await events.line(), await events.line()
    assert first == {"id": first["id"], "event": "stored", **stored}
    assert second == {
        "id": second["id"],
        "event": "deleted",
        "key": prefix + "a",
        "version": stored["version"],
    }
    # Started again after the first event, it replays the second.
    again = await cli("events", prefix, "--since", first["id"])
    assert await again.line() == second
    await writer.close()
    assert (await events.stop())[0] == 0
    assert (await again.stop())[0] == 0


async def test_follow_gets_a_series_whole_while_its_connection_is_cut_twice(
    server: Running, prefix: str, cli: Any, tmp_path: Path
) -> None:
    total = 300
    out = tmp_path / "planning"
    out.mkdir()
    series = {f"study-1/series-2/slice-{n:04d}.dcm": slice_bytes(n) for n in range(total)}
    follow = await cli("follow", prefix, "-o", str(out), "--max-backoff", "0.5")
    await until_subscribed(server)

    async def upload() -> None:
        writer = await server.client()
        for name, data in series.items():
            assert (await writer.put(prefix + name, data)).ok
        await writer.close()

    uploading = asyncio.create_task(upload())
    lines: list[dict[str, Any]] = []
    for cut in (100, 200, total):
        while len(lines) < cut:
            lines.append(await follow.line())
        if cut < total:
            # The subscribed connection drops (a balancer restarting, a cable pulled).
            (await until_subscribed(server)).writer.transport.abort()
    await uploading
    code, err = await follow.stop()
    assert code == 0
    assert err.count("reconnecting") >= 2
    assert tree(out) == series  # bit for bit, nothing more: no partial files
    assert sorted(line["key"] for line in lines) == sorted(prefix + k for k in series)
    assert all(line["event"] == "stored" for line in lines)
    for line in lines:
        data = series[line["key"][len(prefix) :]]
        assert line["sha1"] == hashlib.sha1(data).hexdigest()
        assert Path(line["path"]) == out / line["key"][len(prefix) :]


@pytest.mark.config(event_retention=1)
async def test_follow_catches_up_mirrors_deletes_runs_hooks_and_stays_inside(
    server: Running, prefix: str, cli: Any, tmp_path: Path, vk: Any
) -> None:
    out, hooks = tmp_path / "mirror", tmp_path / "hooks.log"
    out.mkdir()
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import os, sys\n"
        f"with open({str(hooks)!r}, 'a') as log:\n"
        "    log.write(os.environ['VALISE_KEY'] + ' ' + sys.argv[1] + '\\n')\n"
    )
    writer = await server.client()
    for key in ("old/1.dcm", "../escape", "a//b", "old/2.dcm"):
        assert (await writer.put(prefix + key, key.encode())).ok
    listener = await server.client()
    since = (await listener.request(FrameType.SUBSCRIBE, {})).body["cursor"]
    await listener.close()
    # The retention passes: the follower's `since` is no longer known.
    for _ in range(100):
        if not vk.exists("valise:{ns=}:ev"):
            break
        await asyncio.sleep(0.1)
    assert not vk.exists("valise:{ns=}:ev")
    command = f"{sys.executable} {hook}"
    follow = await cli(
        "follow", prefix, "-o", str(out), "--since", since, "--mirror-deletes", "--exec", command
    )
    # complete: false, so it lists: the two files, and the two keys with no safe path.
    got = {(line["event"], line["key"]) for line in [await follow.line() for _ in range(4)]}
    assert got == {
        ("skipped", prefix + "../escape"),
        ("skipped", prefix + "a//b"),
        ("stored", prefix + "old/1.dcm"),
        ("stored", prefix + "old/2.dcm"),
    }
    await until_subscribed(server)
    assert (await writer.put(prefix + "new/3.dcm", b"three")).ok
    assert (await follow.line())["key"] == prefix + "new/3.dcm"
    assert (await writer.request(FrameType.DELETE, {"key": prefix + "old/1.dcm"})).ok
    assert await follow.line() == {
        "event": "deleted",
        "key": prefix + "old/1.dcm",
        "path": str(out / "old" / "1.dcm"),
    }
    await writer.close()
    assert (await follow.stop())[0] == 0
    assert tree(out) == {"old/2.dcm": b"old/2.dcm", "new/3.dcm": b"three"}
    assert not (tmp_path / "escape").exists()
    ran = sorted(hooks.read_text().splitlines())
    assert ran == sorted(
        f"{prefix}{name} {out / name}" for name in ("old/1.dcm", "old/2.dcm", "new/3.dcm")
    )


async def test_follow_refuses_a_server_without_events(
    server: Running, prefix: str, cli: Any, tmp_path: Path
) -> None:
    server.server.state.features = frozenset({"versions"})
    follow = await cli("follow", prefix, "-o", str(tmp_path))
    assert await asyncio.wait_for(follow.proc.wait(), 30) != 0
    _, err = await follow.stop()
    assert "does not offer change events" in err
