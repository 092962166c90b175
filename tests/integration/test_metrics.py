"""/metrics and /healthz over real HTTP, after real transfers against a real Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from protocol.frames import FrameType
from service.auth import Tokens
from storage.embedded import EmbeddedValkey
from tests.support.harness import Running, make_config, start_server, stop_server
from tests.support.wire import WireClient, control, frame

pytestmark = pytest.mark.asyncio

#: Key names and bytes that must never show in a scrape.
KEY = "patients/Jane Roe 1961-02-03/t1.nii"
PIXELS = b"PATIENT-PIXELS-"


class Samples:
    """One scrape: ``samples("valise_requests_total", op="put", outcome="ok")``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def by(self, name: str, label: str) -> dict[str, float]:
        """Every sample of ``name`` keyed by the value of ``label``."""
        return {
            dict(labels)[label]: value
            for (sample, labels), value in self.values.items()
            if sample == name and label in dict(labels)
        }


async def http(
    address: tuple[str, int], path: str = "/", *, method: str = "GET", raw: bytes | None = None
) -> tuple[int, str]:
    """One request to the metrics endpoint: (status, body); status 0 if it just closed."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(raw or f"{method} {path} HTTP/1.1\r\nHost: valise\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(15):
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head else 0), body.decode()


async def scrape(address: tuple[str, int]) -> Samples:
    status, text = await http(address, "/metrics")
    assert status == 200
    return Samples(text)


def endpoint(running: Running) -> tuple[str, int]:
    assert running.server.exporter is not None
    assert running.server.exporter.address is not None
    return running.server.exporter.address


def payload(seed: int, size: int) -> bytes:
    """File bytes that say what they are (so a leak is easy to spot), then noise."""
    noise = random.Random(seed).randbytes(size)
    return (PIXELS * (size // len(PIXELS) + 1))[: size // 2] + noise[size // 2 :]


@pytest.mark.config(metrics_port=0)
async def test_requests_and_bytes_are_counted_exactly(server: Running, prefix: str) -> None:
    client = await server.client()
    files = {f"{prefix}{KEY}.{i}": payload(i, size) for i, size in enumerate([150_000, 0, 70_000])}
    for key, data in files.items():
        assert (await client.put(key, data)).ok
    first, _, third = files
    assert (await client.get(first)).data == files[first]
    assert len((await client.get(third, offset=10, length=1000)).data) == 1000
    assert (await client.request(FrameType.STAT, {"key": first})).ok
    assert (await client.request(FrameType.STAT, {"key": prefix + "missing"})).code == "not_found"
    assert (await client.request(FrameType.DELETE, {"key": third})).ok
    assert (await client.get(third)).code == "not_found"
    assert (await client.request(FrameType.LIST, {"prefix": prefix})).ok
    # The reply to this PING means every earlier request has been counted.
    assert (await client.request(FrameType.PING, {})).ok

    samples = await scrape(endpoint(server))
    total = sum(v for (name, _), v in samples.values.items() if name == "valise_requests_total")
    assert total == 3 + 3 + 2 + 1 + 1 + 1
    assert samples("valise_requests_total", op="put", outcome="ok") == 3
    assert samples("valise_requests_total", op="get", outcome="ok") == 2
    assert samples("valise_requests_total", op="get", outcome="not_found") == 1
    assert samples("valise_requests_total", op="stat", outcome="ok") == 1
    assert samples("valise_requests_total", op="stat", outcome="not_found") == 1
    assert samples("valise_requests_total", op="delete", outcome="ok") == 1
    assert samples("valise_requests_total", op="list", outcome="ok") == 1
    assert samples("valise_requests_total", op="ping", outcome="ok") == 1
    assert samples("valise_request_seconds_count", op="put") == 3
    assert samples("valise_request_seconds_count", op="get") == 3
    assert samples("valise_received_bytes_total") == 150_000 + 70_000
    assert samples("valise_sent_bytes_total") == 150_000 + 1000
    assert samples("valise_connections") == 1
    assert samples("valise_transfers", direction="upload") == 0
    assert samples("valise_transfers", direction="download") == 0
    calls = samples.by("valise_valkey_call_seconds_count", "kind")
    assert sum(calls.values()) > 0
    assert samples.by("valise_valkey_errors_total", "outcome") == {}
    # Nothing of a key name or of a file's bytes, anywhere in the scrape.
    assert "Jane" not in samples.text
    assert prefix not in samples.text
    assert PIXELS.decode() not in samples.text
    await client.close()


@pytest.mark.config(metrics_port=0)
async def test_transfers_in_progress(server: Running, prefix: str) -> None:
    address = endpoint(server)
    uploader = await server.client()
    data = payload(7, 200_000)
    await uploader.send(control(FrameType.PUT, {"key": prefix + "up"}))
    assert (await uploader.reply()).ok  # counted from the PUT on
    await uploader.send(frame(FrameType.DATA, data[:1000]))
    samples = await scrape(address)
    assert samples("valise_transfers", direction="upload") == 1
    assert samples("valise_connections") == 1
    for at in range(1000, len(data), 65536):
        await uploader.send(frame(FrameType.DATA, data[at : at + 65536]))
    await uploader.send(frame(FrameType.END, hashlib.sha1(data).digest()))
    assert (await uploader.reply()).ok
    assert (await uploader.request(FrameType.PING, {})).ok

    # A reader that takes only the OK of a file larger than every buffer on
    # the way (a small receive window, at most tcp_wmem of send buffer): the
    # download stays in progress until it reads on.
    big = payload(8, send_buffer_max() + 2 * 1024**2)
    assert (await uploader.put(prefix + "big", big)).ok
    downloader = await small_window_client(server)
    await downloader.send(control(FrameType.GET, {"key": prefix + "big"}))
    assert (await downloader.reply()).ok
    samples = await scrape(address)
    assert samples("valise_transfers", direction="upload") == 0
    assert samples("valise_transfers", direction="download") == 1
    assert samples("valise_connections") == 2
    received = bytearray()
    while (got := await downloader.frame()) is not None and got.type is FrameType.DATA:
        received += got.payload
    assert got is not None and got.type is FrameType.END
    assert received == big
    assert (await downloader.request(FrameType.PING, {})).ok
    samples = await scrape(address)
    assert samples("valise_transfers", direction="download") == 0
    assert samples("valise_received_bytes_total") == len(data) + len(big)
    assert samples("valise_sent_bytes_total") == len(big)
    await uploader.close()
    await downloader.close()


def send_buffer_max() -> int:
    """The most a TCP socket's send buffer may grow to (net.ipv4.tcp_wmem)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024**2


async def small_window_client(server: Running) -> WireClient:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    return WireClient(reader, writer)


@pytest.mark.config(metrics_port=0, max_connections=1)
async def test_refused_connections_are_counted(server: Running) -> None:
    first = await server.client()
    assert (await first.request(FrameType.PING, {})).ok
    second = await server.client()
    assert (await second.reply()).code == "busy"
    samples = await scrape(endpoint(server))
    assert samples("valise_connections_refused_total", code="busy") == 1
    await first.close()
    await second.close()


@pytest.fixture
def tokens_file(tmp_path: Path) -> tuple[Path, str]:
    namespace = f"ns-{uuid.uuid4().hex[:10]}"
    path = tmp_path / "tokens"
    path.write_text(f"metrics-secret {namespace} rw\n")
    return path, namespace


async def test_files_and_bytes_per_namespace(
    valkey_server: EmbeddedValkey, tokens_file: tuple[Path, str]
) -> None:
    path, namespace = tokens_file
    config = make_config(tokens=str(path), metrics_port=0, metrics_sample=0.05)
    running = await start_server(valkey_server.url, config, Tokens.load(path))
    try:
        client = await running.client()
        assert (await client.request(FrameType.HELLO, {"version": 1, "token": "metrics-secret"})).ok
        for name, size in [("a", 100_000), ("b", 5), ("c", 0), ("d", 3000)]:
            assert (await client.put(f"{KEY}/{name}", payload(size, size))).ok
        assert (await client.put(f"{KEY}/a", payload(1, 2500))).ok  # replaced: one file
        assert (await client.request(FrameType.DELETE, {"key": f"{KEY}/d"})).ok
        await client.close()

        exporter = running.server.exporter
        assert exporter is not None
        assert await exporter.usage.sample(running.store)
        samples = await scrape(endpoint(running))
        assert samples("valise_stored_files", namespace=namespace) == 3
        assert samples("valise_stored_bytes", namespace=namespace) == 2500 + 5 + 0
        assert samples("valise_usage_sampled_timestamp_seconds") > 0
        assert "Jane" not in samples.text

        # The background sampler sees a change on its own.
        client = await running.client()
        assert (await client.request(FrameType.HELLO, {"version": 1, "token": "metrics-secret"})).ok
        assert (await client.request(FrameType.DELETE, {"key": f"{KEY}/a"})).ok
        await client.close()
        deadline = time.monotonic() + 15
        while (await scrape(endpoint(running)))("valise_stored_files", namespace=namespace) != 2:
            assert time.monotonic() < deadline, "the sampler never ran"
            await asyncio.sleep(0.05)
    finally:
        await stop_server(running)


@pytest.fixture
def own_valkey() -> Iterator[EmbeddedValkey]:
    """A private valkey-server this test may stop and kill (never the session one)."""
    with EmbeddedValkey(maxmemory=256 * 1024**2) as valkey:
        yield valkey


async def test_healthz_follows_valkey(own_valkey: EmbeddedValkey) -> None:
    running = await start_server(own_valkey.url, make_config(metrics_port=0, valkey_cluster=False))
    address = endpoint(running)
    assert own_valkey.process is not None
    valkey_pid = own_valkey.process.pid
    try:
        assert await http(address, "/healthz") == (200, "ok\n")
        # A hung Valkey: the answer comes after HEALTH_TIMEOUT, not the storage timeout (30 s).
        os.kill(valkey_pid, signal.SIGSTOP)
        try:
            status, body = await http(address, "/healthz")
        finally:
            os.kill(valkey_pid, signal.SIGCONT)
        assert status == 503
        assert body.startswith("unavailable: Valkey did not answer within")
        assert await http(address, "/healthz") == (200, "ok\n")

        own_valkey.kill()
        status, body = await http(address, "/healthz")
        assert status == 503
        assert body.startswith("unavailable: ")
        assert own_valkey.password not in body
        client = await running.client()
        assert (await client.request(FrameType.STAT, {"key": "k"})).code == "unavailable"
        await client.close()
        samples = await scrape(address)
        assert samples("valise_valkey_errors_total", outcome="unavailable") >= 1
        assert samples("valise_requests_total", op="stat", outcome="unavailable") == 1
    finally:
        await stop_server(running)


@pytest.mark.config(metrics_port=0)
async def test_http_corners(server: Running) -> None:
    address = endpoint(server)
    assert (await http(address, "/nope"))[0] == 404
    assert (await http(address, "/metrics", method="POST"))[0] == 405
    assert await http(address, "/healthz", method="HEAD") == (200, "")
    assert (await http(address, "/metrics?name[]=x"))[0] == 200
    assert (await http(address, raw=b"hello\r\n\r\n"))[0] == 400
    # A head that never ends within the limit: closed without an answer.
    assert await http(address, raw=b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000) == (0, "")


async def test_shutting_down_is_unhealthy(valkey_server: EmbeddedValkey) -> None:
    running = await start_server(valkey_server.url, make_config(metrics_port=0, shutdown_grace=5))
    address = endpoint(running)
    client = await running.client()
    await client.send(control(FrameType.PUT, {"key": f"t-{uuid.uuid4().hex}"}))
    assert (await client.reply()).ok  # an upload in progress holds the shutdown
    shutdown = asyncio.create_task(running.server.shutdown())
    await asyncio.sleep(0)
    assert running.server.closing
    status, body = await http(address, "/healthz")
    assert (status, body) == (503, "unavailable: shutting down\n")
    await client.close()
    await shutdown
    await running.store.close()
