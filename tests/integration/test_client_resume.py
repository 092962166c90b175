"""The bundled client resumes by itself across links cut for real (docs/client.md).

The CLI runs as a process; between it and a real server sits the fault
proxy (tests/support/faultproxy.py). Uploads of about 1 MiB in 64 KiB chunks
are cut at a chunk boundary, inside a chunk, inside a frame header, at the
last byte before END and five times in one upload: each must finish with
the right SHA-1, read back through the binary door, and must have resumed
(the later connection carries only the rest of the file). Downloads cut
mid-file resume pinned to their version, or exit 3 with no file when that
version is gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from client import wire
from client.aio import AsyncClient
from client.errors import ConnectionLost, IntegrityError, NotFound
from client.watchscan import Seen
from client.watchsend import send_file
from protocol.frames import FrameType
from tests.support.faultproxy import FaultProxy
from tests.support.harness import CHUNK, ROOT, Running
from tests.support.resume import boundaries, send_quietly, until, upload_stream
from tests.support.wire import WireClient

pytestmark = pytest.mark.asyncio

SIZE = 16 * CHUNK + 777  # about 1 MiB: 17 DATA frames of the client's 64 KiB
FRAME = 64 * 1024  # the client's DATA frames: the server's max_frame in these tests
END = 5 + 20


@pytest_asyncio.fixture
async def proxy(server: Running) -> AsyncIterator[FaultProxy]:
    faulty = FaultProxy((server.host, server.port))
    await faulty.start()
    yield faulty
    await faulty.close()


async def cli(proxy: FaultProxy, *args: str) -> tuple[int, str, str]:
    """``python -m client`` through the proxy, with short waits between tries."""
    host, port = proxy.address
    env = {**os.environ, "VALISE_SERVER": f"{host}:{port}", "PYTHONPATH": str(ROOT)}
    env.pop("VALISE_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client",
        *args,
        "--retry-max-wait",
        "0.05",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def put_prefix(key: str) -> int:
    """Bytes the CLI sends before the file's first DATA frame: HELLO and PUT."""
    hello = wire.encode_control(wire.FrameType.HELLO, {"version": 1, "client": "valise-cli"})
    put = wire.encode_control(wire.FrameType.PUT, {"key": key, "size": SIZE, "resumable": True})
    return sum(len(part) for part in (*hello, *put))


def at_file_byte(key: str, n: int) -> int:
    """The position, in the CLI's stream, right after file byte ``n``."""
    frames, within = divmod(n, FRAME)
    return put_prefix(key) + frames * (5 + FRAME) + (5 + within if within else 0)


def stream_length(key: str) -> int:
    frames = -(-SIZE // FRAME)
    return put_prefix(key) + frames * 5 + SIZE + END


async def stored_as(server: Running, key: str, data: bytes) -> None:
    """The key holds exactly ``data``, asked through the binary door."""
    client = await server.client()
    try:
        info = await client.request(FrameType.STAT, {"key": key})
        assert info.ok, info.body
        assert (info.body["size"], info.body["sha1"]) == (
            len(data),
            hashlib.sha1(data).hexdigest(),
        )
        got = await client.get(key)
        assert hashlib.sha1(got.data).digest() == hashlib.sha1(data).digest()
    finally:
        await client.close()


def scan_file(tmp_path: Path, data: bytes, name: str = "scan.nii") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def uploading(server: Running) -> bool:
    """Some connection of the server is still inside an upload."""
    connections: list[Any] = list(server.server.connections.values())
    return any(c.upload is not None for c in connections)


CUTS = {
    "chunk-boundary": lambda key: (at_file_byte(key, 2 * CHUNK), 2 * CHUNK),
    "inside-a-chunk": lambda key: (at_file_byte(key, 2 * CHUNK + 1234), 2 * CHUNK + 1234),
    "inside-a-header": lambda key: (at_file_byte(key, 3 * CHUNK) + 2, 3 * CHUNK),
    "last-byte-before-end": lambda key: (stream_length(key) - 1, SIZE),
}


@pytest.mark.parametrize("where", list(CUTS))
async def test_cli_put_resumes_where_the_link_broke(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path, where: str
) -> None:
    data = os.urandom(SIZE)
    key = prefix + where
    cut, offset = CUTS[where](key)
    proxy.arm(cut)
    proxy.arm(0, "stall")  # the reconnect waits until the server has let go of the first
    run = asyncio.create_task(cli(proxy, "put", str(scan_file(tmp_path, data)), key))
    await until(lambda: len(proxy.links) == 2)
    await asyncio.wait_for(proxy.links[1].struck.wait(), 10)
    await until(lambda: not uploading(server))
    await proxy.release()
    code, out, err = await run
    assert code == 0, err
    assert hashlib.sha1(data).hexdigest() in out
    await stored_as(server, key, data)
    first, _, second = proxy.links
    assert first.forwarded == cut
    # The second connection carried the file from the server's offset, not from 0.
    rest = SIZE - offset
    assert rest <= second.forwarded - END < rest + 200 + 5 * (rest // FRAME + 1)


async def test_cli_put_survives_five_cuts_in_one_upload(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    key = prefix + "five"
    # Each connection lets 150,000 bytes through, more than HELLO and RESUME.
    for n in range(5):
        proxy.arm(150_000 + 1_000 * n + 3 * n, "reset" if n % 2 else "close")
    code, _, err = await cli(proxy, "put", str(scan_file(tmp_path, data)), key)
    assert code == 0, err
    await stored_as(server, key, data)
    assert len(proxy.links) == 6
    # What the person sees: one line per retry, nothing else (no asyncio noise).
    said = [line.rsplit("; ", 1)[-1].split(" in ")[0] for line in err.splitlines()]
    assert said == [f"retry {n} of 8" for n in range(1, 6)], err
    assert sum(link.forwarded for link in proxy.links) < 2 * SIZE


@pytest.mark.config(chunk_size=1024 * 1024, max_frame=1024 * 1024)
async def test_a_link_reset_mid_stream_costs_one_line(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    # Big enough that the client is still writing frames when the reset lands.
    data = os.urandom(24 * 1024 * 1024)
    proxy.arm(8_000_000, "reset")
    code, _, err = await cli(proxy, "put", str(scan_file(tmp_path, data)), prefix + "big")
    assert code == 0, err
    await stored_as(server, prefix + "big", data)
    assert [line.split("; ")[-1].split(" in ")[0] for line in err.splitlines()] == [
        "retry 1 of 8"
    ], err


async def test_cli_put_fails_with_exit_5_when_retries_run_out(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    key = prefix + "down"
    proxy.arm(200_000)
    for _ in range(3):
        proxy.arm(0)  # accepted and closed at once: the server is out of reach
    code, _, err = await cli(proxy, "put", str(scan_file(tmp_path, data)), key, "--retries", "3")
    assert code == 5, err
    assert "connection" in err
    assert len(proxy.links) == 4
    client = await server.client()
    assert (await client.request(FrameType.STAT, {"key": key})).body["code"] == "not_found"
    await client.close()


@pytest.mark.parametrize("size", [0, CHUNK], ids=["empty", "one-chunk"])
async def test_cli_small_files_go_up_and_down(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    key = prefix + f"small-{size}"
    code, _, err = await cli(proxy, "put", str(scan_file(tmp_path, data)), key)
    assert code == 0, err
    await stored_as(server, key, data)
    target = tmp_path / "back"
    code, _, err = await cli(proxy, "get", key, "-o", str(target))
    assert code == 0, err
    assert target.read_bytes() == data


async def put_directly(server: Running, key: str, data: bytes) -> None:
    client = await server.client()
    reply = await client.put(key, data)
    assert reply.ok, reply.body
    await client.close()


async def test_cli_get_resumes_mid_file(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    key = prefix + "down.bin"
    await put_directly(server, key, data)
    proxy.arm(300_000, downstream=True)
    target = tmp_path / "down.bin"
    code, _, err = await cli(proxy, "get", key, "-o", str(target))
    assert code == 0, err
    assert hashlib.sha1(target.read_bytes()).hexdigest() == hashlib.sha1(data).hexdigest()
    assert os.listdir(tmp_path) == ["down.bin"]
    first, second = proxy.links
    assert first.returned == 300_000
    # The rest, not the whole file again (the frame the cut split is fetched again).
    assert second.returned < SIZE - 300_000 + FRAME + 2_000


async def test_cli_get_whose_version_was_replaced_exits_3_and_leaves_no_file(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    key = prefix + "replaced.bin"
    await put_directly(server, key, data)
    proxy.arm(300_000, downstream=True)
    hello = wire.encode_control(wire.FrameType.HELLO, {"version": 1, "client": "valise-cli"})
    proxy.arm(
        sum(len(part) for part in hello), "stall"
    )  # the reconnect waits here while the key is replaced
    target = tmp_path / "replaced.bin"
    run = asyncio.create_task(cli(proxy, "get", key, "-o", str(target)))
    await until(lambda: len(proxy.links) == 2)
    await asyncio.wait_for(proxy.links[1].struck.wait(), 10)
    await put_directly(server, key, os.urandom(1000))
    await proxy.release()
    code, _, err = await run
    assert code == 3, err
    assert "gone" in err
    assert os.listdir(tmp_path) == []


async def test_library_progress_shows_the_resumed_position(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    key = prefix + "progress"
    seen: list[int] = []
    proxy.arm(at_file_byte(key, 5 * CHUNK) + 5 + 100)
    async with AsyncClient(
        *proxy.address, retries=2, max_backoff=0.05, client_name="valise-cli"
    ) as client:
        info = await client.put(
            key, data, resumable=True, progress=lambda done, total: seen.append(done)
        )
    assert info["sha1"] == hashlib.sha1(data).hexdigest()
    restart = next(i for i in range(1, len(seen)) if seen[i] < seen[i - 1])
    assert seen[restart] == 5 * CHUNK + 100  # the server's offset, not 0
    assert seen[-1] == SIZE


async def cut_upload(proxy: FaultProxy, key: str, data: bytes) -> str:
    """A resumable upload of ``data`` whose link broke half-way: its upload id."""
    stream = upload_stream(key, data)
    proxy.arm(len(stream) // 2)
    put_size = boundaries(stream)[1]
    raw = await WireClient.connect(*proxy.address)
    await raw.send(stream[:put_size])
    first = await raw.reply()
    assert first.ok, first.body
    await send_quietly(raw, stream[put_size:])
    await proxy.struck()
    await raw.close()
    return str(first.body["upload_id"])


async def test_library_resume_by_upload_id(server: Running, proxy: FaultProxy, prefix: str) -> None:
    data = os.urandom(SIZE)
    key = prefix + "by-id"
    upload_id = await cut_upload(proxy, key, data)
    async with AsyncClient(server.host, server.port, retries=1, max_backoff=0.05) as client:
        info = await client.resume(upload_id, data)
        assert info["sha1"] == hashlib.sha1(data).hexdigest()
        with pytest.raises(NotFound):
            await client.resume(upload_id, data)  # committed: gone
    await stored_as(server, key, data)


async def test_library_resume_of_other_bytes_fails_on_its_digest(
    server: Running, proxy: FaultProxy, prefix: str
) -> None:
    data = os.urandom(SIZE)
    upload_id = await cut_upload(proxy, prefix + "other", data)
    other = bytes([data[0] ^ 1]) + data[1:]  # the bytes before the break differ
    async with AsyncClient(server.host, server.port, retries=3, max_backoff=0.05) as client:
        with pytest.raises(IntegrityError) as failed:
            await client.resume(upload_id, other)
    assert failed.value.code == "checksum_mismatch"
    async with AsyncClient(server.host, server.port) as client:
        with pytest.raises(NotFound):
            await client.stat(prefix + "other")  # nothing half-made was published


async def test_agent_upload_resumes_after_a_cut(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    path = scan_file(tmp_path, data)
    st = path.stat()
    seen = Seen("scan.nii", str(path), st.st_size, st.st_mtime_ns)
    proxy.arm(400_000)
    async with AsyncClient(*proxy.address, retries=2, max_backoff=0.05) as client:
        record = await send_file(client, seen, prefix + "scan.nii", ttl=None, create_only=False)
    assert record.sha1 == hashlib.sha1(data).hexdigest()
    await stored_as(server, prefix + "scan.nii", data)
    assert len(proxy.links) == 2 and proxy.links[1].forwarded < SIZE


async def test_an_upload_left_open_by_a_long_outage_is_continued_by_the_agent(
    server: Running, proxy: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(SIZE)
    path = scan_file(tmp_path, data)
    st = path.stat()
    seen = Seen("scan.nii", str(path), st.st_size, st.st_mtime_ns)
    key = prefix + "scan.nii"
    proxy.arm(500_000)
    proxy.arm(0)  # the link stays down past the client's one retry
    async with AsyncClient(*proxy.address, retries=1, max_backoff=0.05) as client:
        with pytest.raises(ConnectionLost) as lost:
            await send_file(client, seen, key, ttl=None, create_only=False)
        upload_id = lost.value.upload_id
        assert upload_id is not None
        # The next pass is cut too: the upload is still open, and the error says which.
        proxy.arm(100_000)
        proxy.arm(0)
        with pytest.raises(ConnectionLost) as again:
            await send_file(client, seen, key, ttl=None, create_only=False, upload_id=upload_id)
        assert again.value.upload_id == upload_id
        # The pass after: only the rest of the file crosses the link.
        record = await send_file(
            client, seen, key, ttl=None, create_only=False, upload_id=upload_id
        )
    assert record.sha1 == hashlib.sha1(data).hexdigest()
    await stored_as(server, key, data)
    assert len(proxy.links) == 5 and proxy.links[4].forwarded < SIZE - 500_000
