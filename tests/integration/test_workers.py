"""Many servers: --workers N processes on one port, and two servers on one Valkey."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol.frames import FrameType
from service.config import parse_args
from service.workers import reserve_port
from storage.embedded import EmbeddedValkey
from tests.integration.test_metrics import Samples, scrape
from tests.support.harness import reap, start_process
from tests.support.ports import free_port
from tests.support.wire import WireClient

HOST = "127.0.0.1"


def children(pid: int) -> set[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return {int(p) for p in found.stdout.split()}


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent's wait() does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def metrics_dirs(pid: int) -> list[Path]:
    return list(Path("/dev/shm").glob(f"valise-metrics-{pid}-*"))


@dataclass
class Pool:
    proc: subprocess.Popen[str]
    port: int
    metrics: tuple[str, int]

    @property
    def workers(self) -> set[int]:
        return children(self.proc.pid)

    async def connect(self) -> WireClient:
        client = await WireClient.connect(HOST, self.port)
        assert (await client.request(FrameType.PING, {})).ok  # accepted and served
        return client

    async def connections(self) -> dict[int, float]:
        """Open client connections per worker pid, from the parent's /metrics."""
        samples = await scrape(self.metrics)
        return {int(pid): n for pid, n in samples.by("valise_connections", "pid").items()}


def start_pool(valkey_url: str, *args: str) -> Pool:
    metrics_port = free_port()
    proc, port = start_process(
        valkey_url,
        "--workers",
        "2",
        "--metrics-port",
        str(metrics_port),
        "--chunk-size",
        "64KiB",
        "--shutdown-grace",
        "2",
        *args,
    )
    pool = Pool(proc, port, (HOST, metrics_port))
    wait_until(lambda: len(pool.workers) == 2, "both workers run")
    return pool


@pytest.fixture
def pool(valkey_server: EmbeddedValkey) -> Iterator[Pool]:
    pool = start_pool(valkey_server.url)
    yield pool
    if pool.proc.poll() is None:
        pool.proc.terminate()
    reap(pool.proc, timeout=30)
    for leftover in metrics_dirs(pool.proc.pid):
        shutil.rmtree(leftover)


async def owners(pool: Pool, wanted: set[int], limit: int = 64) -> dict[int, WireClient]:
    """Open connections one at a time until each pid in ``wanted`` serves one of them.

    The kernel spreads connections over the workers by a hash: the metrics
    show whose count went up, so each connection's worker is known exactly.
    """
    found: dict[int, WireClient] = {}
    spare: list[WireClient] = []
    before = await pool.connections()
    for _ in range(limit):
        client = await pool.connect()
        after = await pool.connections()
        grew = [pid for pid, n in after.items() if n > before.get(pid, 0)]
        assert len(grew) == 1, (before, after)
        before = after
        if grew[0] in wanted and grew[0] not in found:
            found[grew[0]] = client
        else:
            spare.append(client)
        if set(found) == wanted:
            break
    for client in spare:
        await client.close()
    assert set(found) == wanted, f"{limit} connections never reached {wanted - set(found)}"
    return found


def test_workers_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_args([]).workers == 1
    assert parse_args([]).metrics_port is None
    monkeypatch.setenv("VALISE_WORKERS", "3")
    monkeypatch.setenv("VALISE_METRICS_PORT", "9100")
    config = parse_args([])
    assert (config.workers, config.metrics_port, config.metrics_host) == (3, 9100, "127.0.0.1")
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--metrics-sample", "0"])


def test_reserved_port_is_shared_only_by_reuse_port_sockets() -> None:
    reserved, port = reserve_port(HOST, 0)
    try:
        assert port > 0
        joiner = socket.socket()
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        joiner.bind((HOST, port))  # what a worker's reuse_port=True listener does
        joiner.close()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind((HOST, port))  # anyone else is kept out
    finally:
        for sock in reserved:
            sock.close()
    with socket.create_server((HOST, 0)) as taken, pytest.raises(OSError, match="in use"):
        reserve_port(HOST, taken.getsockname()[1])  # refused, not silently shared


@pytest.mark.asyncio
async def test_one_port_served_by_every_worker(pool: Pool, prefix: str) -> None:
    workers = pool.workers
    assert set(await pool.connections()) == workers
    clients = await owners(pool, workers)
    first, second = (clients[pid] for pid in sorted(workers))
    data = random.Random(1).randbytes(300_000)  # several 64 KiB chunks
    assert (await first.put(prefix + "scan", data)).ok
    got = await second.get(prefix + "scan")
    assert got.ok and got.data == data and got.end == hashlib.sha1(data).digest()
    assert (await second.put(prefix + "back", data[::-1])).ok
    assert (await first.get(prefix + "back")).data == data[::-1]
    assert (await second.request(FrameType.DELETE, {"key": prefix + "scan"})).ok
    assert (await first.get(prefix + "scan")).code == "not_found"
    samples = await scrape(pool.metrics)
    assert samples("valise_requests_total", op="put", outcome="ok") == 2
    assert samples("valise_received_bytes_total") == 2 * len(data)
    assert samples("valise_sent_bytes_total") == 2 * len(data)
    assert samples("valise_workers") == 2
    for client in clients.values():
        await client.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_every_process_and_exits_0(
    valkey_server: EmbeddedValkey, sig: signal.Signals
) -> None:
    pool = start_pool(valkey_server.url)
    workers = pool.workers
    if Path("/dev/shm").is_dir():
        assert len(metrics_dirs(pool.proc.pid)) == 1
    pool.proc.send_signal(sig)
    assert reap(pool.proc, timeout=30) == 0
    assert not any(alive(pid) for pid in workers)
    assert metrics_dirs(pool.proc.pid) == []


@pytest.mark.asyncio
async def test_killed_worker_is_restarted(pool: Pool) -> None:
    before = pool.workers
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # One look per check: two pgreps could see the victim, then neither it nor a newcomer.
    now: set[int] = set()

    def replaced() -> bool:
        now.clear()
        now.update(pool.workers)
        return len(now) == 2 and victim not in now

    wait_until(replaced, "a new worker")
    (newcomer,) = now - before
    samples: Samples = await scrape(pool.metrics)
    assert samples("valise_worker_restarts_total") == 1
    assert samples("valise_workers") == 2
    assert str(victim) not in samples.by("valise_connections", "pid")  # marked dead
    # The newcomer takes connections on the same port.
    clients = await owners(pool, {newcomer})
    assert (await clients[newcomer].request(FrameType.STAT, {"key": "nope"})).code == "not_found"
    await clients[newcomer].close()


def test_workers_die_with_a_killed_parent(pool: Pool) -> None:
    workers = pool.workers
    pool.proc.kill()
    reap(pool.proc)
    wait_until(lambda: not any(alive(pid) for pid in workers), "the workers exit")


@pytest.mark.asyncio
async def test_two_servers_share_one_valkey(valkey_server: EmbeddedValkey, prefix: str) -> None:
    one, port_one = start_process(valkey_server.url, "--chunk-size", "64KiB")
    two, port_two = start_process(valkey_server.url, "--chunk-size", "64KiB")
    try:

        async def round_trip(i: int) -> None:
            key = f"{prefix}file-{i}"
            data = random.Random(i).randbytes(i * 50_000 + 7)
            writer = await WireClient.connect(HOST, port_one)
            reader = await WireClient.connect(HOST, port_two)
            assert (await writer.put(key, data)).ok
            got = await reader.get(key)
            assert got.ok and got.data == data and got.end == hashlib.sha1(data).digest()
            assert (await writer.request(FrameType.DELETE, {"key": key})).body == {"deleted": True}
            assert (await reader.get(key)).code == "not_found"
            assert (await reader.request(FrameType.STAT, {"key": key})).code == "not_found"
            await writer.close()
            await reader.close()

        await asyncio.gather(*(round_trip(i) for i in range(8)))
    finally:
        for proc in (one, two):
            proc.terminate()
            assert reap(proc) == 0
