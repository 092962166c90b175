"""Valise benchmark: `python -m tests.tools.bench` (`make bench ARGS=...`). Prints, never asserts.

One run starts a private valkey-server (unix socket, persistence off) and, per
chunk size, the Valise server as a subprocess on 127.0.0.1, then measures:

1. ceiling: raw valkey-py asyncio SET then GET of ``--size`` bytes in chunk-size
   values (one command in flight, the pool settings of storage/store.py);
2. Valise upload and download of the same bytes over TCP (MB/s, ratio to 1);
3. small files: ``--small-connections`` connections doing PUT then GET of 4 KiB,
   beside raw valkey-py SET then GET of them, CPU per pair (tests/tools/bench_small.py);
4. the server's peak RSS during 2, and during ``--concurrent`` parallel uploads;
5. 1 and 2 for every ``--chunk-sizes`` value (the server is restarted per size);
6. resumable uploads: upload MB/s with ``resumable`` on and off, and the time
   from RESUME to its OK with ``--size`` bytes stored (the whole-file SHA-1
   rebuilt from Valkey, docs/decisions/0010-resumable-uploads.md).
7. change events, once: small-file commits/s without a subscriber and with one,
   and the time from each commit's OK to its EVENT at the subscriber (p50/p99).
8. the tus door (tests/tools/bench_tus.py): the ``--size`` upload through tuspy,
   in 8 MiB requests and in one, when tuspy is installed.

MB = 10**6 bytes. Each measurement runs ``--repeat`` times: median (min-max).
``--profile DIR`` instead runs one upload, one download and the small files
under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import io
import json
import os
import platform
import pstats
import secrets
import select
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import valkey.asyncio as valkey_async
from valkey.asyncio.retry import Retry
from valkey.backoff import NoBackoff

from client.loadtest.spawn import start_address
from protocol.frames import HEADER, FrameType
from service.kinds import parse_size
from storage.clients import READ_SIZE
from storage.embedded import EmbeddedValkey, default_maxmemory, die_with_parent
from tests.support.cluster import LocalCluster
from tests.support.harness import ROOT
from tests.tools import bench_small, bench_tus

MB = 1_000_000
MIB = 1024**2
REPO = ROOT
TTL = 900
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Every subprocess this run started; main() ends whatever is still alive.
_children: list[subprocess.Popen[bytes]] = []


class BenchError(Exception):
    pass


# -- numbers -----------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def fmt(stat: dict[str, Any] | None, digits: int = 0) -> str:
    if not stat:
        return "-"
    med, low, high = stat["median"], stat["min"], stat["max"]
    if low == high:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def pair_rates(latencies: list[float], elapsed: float) -> dict[str, float]:
    """Pairs per second, p50 and p99 (ms) of one small-file run's pair latencies."""
    latencies.sort()
    return {
        "pairs_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "pairs": float(len(latencies)),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a whole process (all threads) and its workers, from /proc."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of ``--workers N``)."""
    pids = [pid]
    for parent in pids:
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            pids.extend(int(child) for child in children)
    return pids


class PeakRss:
    """Peak RSS of a process (and its workers, summed) over a block.

    One process: VmHWM reset by clear_refs, plus polling. With workers, the
    polled sum (per-process peaks happen at different times).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tree = len(process_tree(pid)) > 1
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._hwm_reset = False

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(OSError, ValueError):
                rss = sum(_status_kib(pid, "VmRSS") for pid in process_tree(self.pid))
                self.peak_kib = max(self.peak_kib, rss)

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._hwm_reset and not self.tree:
            with contextlib.suppress(OSError, ValueError):
                self.peak_kib = max(self.peak_kib, _status_kib(self.pid, "VmHWM"))

    @property
    def mib(self) -> float:
        return self.peak_kib / 1024


@dataclass
class CpuMeter:
    """CPU seconds spent by the server, valkey-server and this process over a block."""

    pids: dict[str, int]
    used: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._self = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                self.used[name] = cpu_seconds(pid) - self._start[name]
        self.used["client"] = time.process_time() - self._self


# -- processes ---------------------------------------------------------------


def _end(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in _children:
        _children.remove(proc)


@dataclass
class ValiseProcess:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path
    token: str | None = None
    #: The clients' context when the server listens with TLS (--tls).
    tls: ssl.SSLContext | None = None
    #: HOST:PORT of the HTTP door, when it listens.
    http: str | None = None

    async def wire(self) -> Wire:
        return await Wire.connect(self.host, self.port, self.token, self.tls)

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextlib.contextmanager
def valise_server(
    url: str,
    chunk_size: int,
    workdir: Path,
    *,
    profile: Path | None = None,
    target: Target | None = None,
    cwd: Path = REPO,
) -> Iterator[ValiseProcess]:
    """The server as a subprocess (own session: Ctrl-C reaches only us; we stop it).

    ``cwd`` is the tree whose server.py runs (another revision's, for --compare).
    """
    log = workdir / f"server-{uuid.uuid4().hex[:6]}.log"
    command = [target.python if target is not None and target.python else sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["server.py", "--port", "0", "--valkey-url", url, "--chunk-size", str(chunk_size)]
    # grace 0: a deleted file's chunks are freed at once, so runs do not pile up in Valkey.
    # The log level is the default: issue 21's targets are with the access log on.
    command += ["--grace", "0", "--shutdown-grace", "5"]
    token = None
    tls = None
    if target is not None and target.tls:
        # A private CA for this run: the clients verify the server's name.
        ca = trustme.CA()
        pem = workdir / f"tls-{uuid.uuid4().hex[:6]}.pem"
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
        command += ["--tls-cert", str(pem), "--tls-key", str(pem)]
        tls = ssl.create_default_context()
        ca.configure_trust(tls)
    if target is None or "--workers" not in " ".join(target.server_args):
        command += ["--http-port", "0"]  # the HTTP door, measured beside the binary one
    if target is not None:
        command += ["--valkey-cluster"] if target.cluster else []
        command += target.server_args
        if target.auth:
            token = secrets.token_urlsafe(24)
            tokens = workdir / f"tokens-{uuid.uuid4().hex[:6]}"
            tokens.write_text(f"{token} bench rw\n")
            command += ["--tokens", str(tokens)]
    # TMPDIR: nothing of the run outside workdir.
    proc = spawn(command, cwd, log, {**os.environ, "TMPDIR": str(workdir)})
    try:
        host, port, http = _listening(proc, log)
        yield ValiseProcess(proc, host, port, log, token, tls, http)
    finally:
        _end(proc)


def spawn(command: list[str], cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A server process in a session of its own (Ctrl-C reaches only us; we stop
    it), its stderr in ``log``, dying with us; main() ends it if it is still alive."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
            preexec_fn=die_with_parent,
            env=env,
        )
    _children.append(proc)
    return proc


def _listening(
    proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> tuple[str, int, str | None]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            address = start_address(line)
            if address is not None:
                # "... http on HOST:PORT" when the HTTP door listens too.
                words = line.decode().split()
                http = words[words.index("http") + 2] if "http" in words else None
                return (*address, http)
        if proc.poll() is not None:
            break
    tail = log.read_text(errors="replace")[-2000:]
    raise BenchError(f"server did not start (last line {line!r}); its log:\n{tail}")


# -- a minimal streaming client -------------------------------------------------


class Wire:
    """Raw frames over a non-blocking socket: DATA streamed, downloads hashed, not kept."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self._buf = bytearray(4 * MIB)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self.max_frame = 64 * 1024

    @classmethod
    async def connect(
        cls, host: str, port: int, token: str | None = None, tls: ssl.SSLContext | None = None
    ) -> Wire:
        wire: Wire
        if tls is not None:
            wire = TlsWire(*await asyncio.open_connection(host, port, ssl=tls))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            wire = cls(sock)
        hello_request: dict[str, Any] = {"version": 1, "client": "valise-bench"}
        if token is not None:
            hello_request["token"] = token
        hello = await wire.request(FrameType.HELLO, hello_request)
        wire.max_frame = int(hello["max_frame"])
        return wire

    def close(self) -> None:
        assert self.sock is not None
        self.sock.close()

    async def send(self, *parts: bytes | memoryview) -> None:
        assert self.sock is not None
        total = sum(len(part) for part in parts)
        try:
            sent = self.sock.sendmsg(parts)
        except BlockingIOError:
            sent = 0
        if sent == total:
            return
        for part in parts:
            if sent >= len(part):
                sent -= len(part)
                continue
            await self.loop.sock_sendall(self.sock, memoryview(part)[sent:])
            sent = 0

    async def _more(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buf):
            left = self._end - self._start
            self._buf[:left] = self._view[self._start : self._end]
            self._start, self._end = 0, left
        n = await self._recv_into(self._view[self._end :])
        if n == 0:
            raise BenchError("server closed the connection")
        self._end += n

    async def _recv_into(self, view: memoryview) -> int:
        assert self.sock is not None
        return await self.loop.sock_recv_into(self.sock, view)

    async def _exact(self, n: int) -> bytes:
        while self._end - self._start < n:
            await self._more()
        out = bytes(self._view[self._start : self._start + n])
        self._start += n
        return out

    async def _consume(self, n: int, sink: Callable[[memoryview], object]) -> None:
        while n:
            if self._start == self._end:
                await self._more()
            take = min(n, self._end - self._start)
            sink(self._view[self._start : self._start + take])
            self._start += take
            n -= take

    async def _frame_head(self) -> tuple[int, int]:
        kind, length = HEADER.unpack(await self._exact(HEADER.size))
        return int(kind), int(length)

    async def reply(self) -> dict[str, Any]:
        kind, length = await self._frame_head()
        body: dict[str, Any] = json.loads(await self._exact(length) or b"{}")
        if kind == FrameType.ERROR:
            raise BenchError(f"server error {body.get('code')}: {body.get('message')}")
        if kind != FrameType.OK:
            raise BenchError(f"expected OK, got frame type {kind:#x}")
        return body

    async def request(self, kind: FrameType, obj: dict[str, Any]) -> dict[str, Any]:
        await self.send(_control(kind, obj))
        return await self.reply()

    async def put(
        self, key: str, data: memoryview, sha1: bytes | None, *, resumable: bool = False
    ) -> dict[str, Any]:
        """PUT, DATA frames of max_frame, END; DATA streams right after PUT.
        Without ``sha1`` no END: the first OK, the upload left for a RESUME."""
        step = self.max_frame
        put = {"key": key, "size": len(data), "ttl": TTL, "resumable": resumable}
        try:
            await self.send(_control(FrameType.PUT, put))
            for at in range(0, len(data), step):
                piece = data[at : at + step]
                await self.send(HEADER.pack(FrameType.DATA, len(piece)), piece)
            if sha1 is None:
                return await self.reply()
            await self.send(HEADER.pack(FrameType.END, len(sha1)), sha1)
        except OSError:
            await self.reply()  # the server's fatal ERROR explains the reset
            raise
        await self.reply()  # accepted
        return await self.reply()  # stored

    async def put_small(self, key: str, data: bytes, sha1: bytes) -> None:
        """A small file in one write: PUT, one DATA, END."""
        await self.send(
            _control(FrameType.PUT, {"key": key, "size": len(data), "ttl": TTL})
            + HEADER.pack(FrameType.DATA, len(data))
            + data
            + HEADER.pack(FrameType.END, len(sha1))
            + sha1
        )
        await self.reply()
        await self.reply()

    async def get(self, key: str) -> tuple[int, bytes]:
        """GET a whole file: (bytes received, their SHA-1); checked against END."""
        await self.send(_control(FrameType.GET, {"key": key}))
        await self.reply()
        hasher = hashlib.sha1(usedforsecurity=False)
        count = 0
        while True:
            kind, length = await self._frame_head()
            if kind == FrameType.DATA:
                await self._consume(length, hasher.update)
                count += length
            elif kind == FrameType.END:
                end = await self._exact(length)
                digest = hasher.digest()
                if end != digest:
                    raise BenchError(f"GET {key}: END digest does not match the bytes received")
                return count, digest
            elif kind == FrameType.ERROR:
                body = json.loads(await self._exact(length))
                raise BenchError(f"GET {key}: {body.get('code')}: {body.get('message')}")
            else:
                raise BenchError(f"GET {key}: unexpected frame type {kind:#x}")

    async def delete(self, key: str) -> None:
        await self.request(FrameType.DELETE, {"key": key})


class TlsWire(Wire):
    """The same frames over TLS: asyncio streams (the loop's sock_* calls take no TLS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(None)
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()

    async def send(self, *parts: bytes | memoryview) -> None:
        for part in parts:
            self.writer.write(part)
        await self.writer.drain()

    async def _recv_into(self, view: memoryview) -> int:
        data = await self.reader.read(len(view))
        view[: len(data)] = data
        return len(data)


def _control(kind: FrameType, obj: dict[str, Any]) -> bytes:
    payload = json.dumps(obj).encode()
    return HEADER.pack(kind, len(payload)) + payload


class _CountRaw(io.RawIOBase):
    """A write-only raw stream that counts, under a stdlib ``io.BufferedWriter``
    as a file opened 'wb' is: the client lends such a stream each payload
    instead of copying it (client/files.py, Sink), and large writes go
    straight through to the counter.

    It does not hash: the client already checks every byte against the END
    digest and the stored SHA-1 (IntegrityError otherwise), and a user's
    download hashes once, not twice. The bench compares that stored SHA-1
    with the payload's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.count += size
        return size


def project_client(choice: str) -> Any:
    """client.aio.AsyncClient when it exists (and --client allows), else None."""
    if choice == "own":
        return None
    try:
        module = importlib.import_module("client.aio")
        return module.AsyncClient
    except (ImportError, AttributeError):
        if choice == "aio":
            raise
        return None


# -- measurements ---------------------------------------------------------------


@dataclass
class Payload:
    data: bytes
    view: memoryview
    sha1: bytes
    small: bytes
    small_sha1: bytes
    concurrent_sha1: bytes


@dataclass
class Target:
    """What is measured: Valise's options (cluster, workers, auth) on the same run."""

    cluster: bool = False
    server_args: list[str] = field(default_factory=list)
    auth: bool = False
    tls: bool = False
    #: --server-python: the interpreter the server runs under, and its version.
    python: str | None = None
    python_version: str | None = None

    def describe(self) -> str:
        parts = ["Valkey Cluster (3 primaries)" if self.cluster else "one valkey-server"]
        if self.auth:
            parts.append("token auth")
        if self.tls:
            parts.append("TLS")
        if self.server_args:
            parts.append("server " + " ".join(self.server_args))
        if self.python:
            parts.append(f"server Python {self.python_version} ({self.python})")
        return ", ".join(parts)


@dataclass
class Settings:
    size: int
    repeat: int
    chunk_sizes: list[int]
    default_chunk: int
    small_seconds: float
    small_connections: int
    concurrent: int
    concurrent_size: int
    json_path: Path
    client: str
    target: Target = field(default_factory=Target)


def raw_client(url: str, cluster: bool = False) -> Any:
    """valkey-py asyncio with the pool storage/store.py builds (1 MiB socket reads too)."""
    if cluster:
        client = valkey_async.ValkeyCluster.from_url(
            url,
            max_connections=64,
            socket_timeout=30.0,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        client.nodes_manager.connection_kwargs["socket_read_size"] = READ_SIZE
        return client
    pool = valkey_async.BlockingConnectionPool.from_url(
        url,
        max_connections=64,
        timeout=30.0,
        socket_timeout=30.0,
        socket_connect_timeout=5.0,
        retry=Retry(NoBackoff(), 0),
        socket_read_size=READ_SIZE,
        health_check_interval=30,
    )
    return valkey_async.Valkey(connection_pool=pool)


async def raw_set_get(client: Any, payload: Payload, size: int, chunk: int) -> tuple[float, float]:
    """Seconds for SET then GET of ``size`` bytes in ``chunk``-byte values, one at a time."""
    run = uuid.uuid4().hex[:8]
    names = [f"bench:raw:{run}:{i}" for i in range(0, size, chunk)]
    started = time.perf_counter()
    for name, at in zip(names, range(0, size, chunk), strict=True):
        await client.set(name, payload.view[at : min(at + chunk, size)], px=TTL * 1000)
    set_seconds = time.perf_counter() - started
    started = time.perf_counter()
    got = 0
    for name in names:
        value = await client.get(name)
        got += len(value)
        del value
    get_seconds = time.perf_counter() - started
    for at in range(0, len(names), 512):
        await client.unlink(*names[at : at + 512])
    if got != size:
        raise BenchError(f"raw GET returned {got} bytes, not {size}")
    return set_seconds, get_seconds


async def valise_up_down(
    server: ValiseProcess, payload: Payload, size: int, client_cls: Any, cpu: list[CpuMeter]
) -> tuple[float, float]:
    """Seconds for one upload and one download; ``cpu`` gets a meter for each."""
    key = f"bench/big/{uuid.uuid4().hex[:8]}"
    sha1 = payload.sha1 if size == len(payload.data) else hashlib.sha1(payload.view[:size]).digest()
    if client_cls is not None:
        async with client_cls(server.host, server.port, token=server.token, ssl=server.tls) as c:
            started = time.perf_counter()
            with cpu[0]:
                await c.put(key, payload.data if size == len(payload.data) else payload.view[:size])
            up = time.perf_counter() - started
            counter = _CountRaw()
            sink = io.BufferedWriter(counter)
            started = time.perf_counter()
            with cpu[1]:
                info = await c.get(key, sink)
            down = time.perf_counter() - started
            sink.flush()
            got, digest = counter.count, bytes.fromhex(info["sha1"])
            await c.delete(key)
    else:
        wire = await server.wire()
        try:
            started = time.perf_counter()
            with cpu[0]:
                await wire.put(key, payload.view[:size], sha1)
            up = time.perf_counter() - started
            started = time.perf_counter()
            with cpu[1]:
                got, digest = await wire.get(key)
            down = time.perf_counter() - started
            await wire.delete(key)
        finally:
            wire.close()
    if got != size or digest != sha1:
        raise BenchError(f"download of {key} returned other bytes than were uploaded")
    return up, down


async def small_files(server: ValiseProcess, payload: Payload, s: Settings) -> dict[str, float]:
    """Connections doing PUT then GET of 4 KiB files until the deadline."""
    latencies: list[float] = []
    run = uuid.uuid4().hex[:8]
    wires = [await server.wire() for _ in range(s.small_connections)]
    deadline = time.perf_counter() + s.small_seconds

    async def worker(n: int, wire: Wire) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = f"bench/small/{run}/{n}/{i}"
            started = time.perf_counter()
            await wire.put_small(key, payload.small, payload.small_sha1)
            _, digest = await wire.get(key)
            latencies.append(time.perf_counter() - started)
            if digest != payload.small_sha1:
                raise BenchError(f"small file {key} came back different")
            i += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(n, w) for n, w in enumerate(wires)))
    finally:
        for wire in wires:
            wire.close()
    return pair_rates(latencies, time.perf_counter() - started)


def curl_up_down(server: ValiseProcess, payload: Payload, size: int) -> tuple[float, float]:
    """Seconds for one upload and one download of ``size`` bytes through the HTTP door,
    with curl: the body streams from this process's memory on curl's stdin (chunked),
    the download goes to /dev/null and its length is checked."""
    scheme = "https" if server.tls else "http"
    url = f"{scheme}://{server.http}/v1/files/bench/http/{uuid.uuid4().hex[:8]}"
    common = ["curl", "-sS", "-f", "-k"]
    if server.token:
        common += ["-H", f"Authorization: Bearer {server.token}"]
    digest = hashlib.sha1(payload.view[:size]).hexdigest()
    started = time.perf_counter()
    up = subprocess.Popen(
        [*common, "-T", "-", "-H", f"X-Checksum-SHA1: {digest}", "-o", "/dev/null", url],
        stdin=subprocess.PIPE,
    )
    assert up.stdin is not None
    view = payload.view[:size]
    for at in range(0, size, MIB):
        up.stdin.write(view[at : at + MIB])
    up.stdin.close()
    if up.wait() != 0:
        raise BenchError(f"curl upload failed with exit code {up.returncode}")
    up_s = time.perf_counter() - started
    started = time.perf_counter()
    down = subprocess.run(
        [*common, "-o", "/dev/null", "-w", "%{size_download}", url],
        capture_output=True,
        text=True,
        check=False,
    )
    down_s = time.perf_counter() - started
    if down.returncode != 0 or int(down.stdout or 0) != size:
        raise BenchError(f"curl download failed: exit {down.returncode}, {down.stdout} bytes")
    subprocess.run([*common, "-X", "DELETE", "-o", "/dev/null", url], check=False)
    return up_s, down_s


async def small_commits(
    server: ValiseProcess, payload: Payload, s: Settings, *, subscribed: bool
) -> dict[str, float]:
    """4 KiB PUTs on ``small_connections`` connections for ``small_seconds``; with
    ``subscribed``, a subscriber to their prefix times each commit's OK -> EVENT."""
    prefix = f"bench/events/{uuid.uuid4().hex[:8]}/"
    oks: dict[str, float] = {}
    arrivals: dict[str, float] = {}
    wires = [await server.wire() for _ in range(s.small_connections)]
    listener = None
    if subscribed:
        listener = await server.wire()
        await listener.request(FrameType.SUBSCRIBE, {"prefix": prefix})

    async def listen(wire: Wire) -> None:
        while True:
            kind, length = await wire._frame_head()
            body = json.loads(await wire._exact(length))
            if kind == FrameType.EVENT:
                arrivals[body["key"]] = time.perf_counter()

    listening = asyncio.create_task(listen(listener)) if listener else None
    deadline = time.perf_counter() + s.small_seconds

    async def worker(n: int, wire: Wire) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = f"{prefix}{n}/{i}"
            await wire.put_small(key, payload.small, payload.small_sha1)
            oks[key] = time.perf_counter()
            i += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(n, w) for n, w in enumerate(wires)))
        elapsed = time.perf_counter() - started
        if listening is not None:
            for _ in range(100):  # the last events are on their way
                if len(arrivals) >= len(oks):
                    break
                await asyncio.sleep(0.05)
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
    finally:
        for wire in [*wires, *([listener] if listener else [])]:
            wire.close()
    result = {"commits_per_s": len(oks) / elapsed}
    if subscribed:
        # Negative when the EVENT overtook the OK (they leave the server together).
        lags = sorted(arrivals[k] - oks[k] for k in oks if k in arrivals)
        result |= {
            "event_p50_ms": percentile(lags, 0.50) * 1000,
            "event_p99_ms": percentile(lags, 0.99) * 1000,
            "events_missing": float(len(oks) - len(lags)),
        }
    return result


def http_small_files(server: ValiseProcess, payload: Payload, seconds: float) -> float:
    """PUT+GET pairs of 4 KiB per second over one HTTP keep-alive connection (http.client)."""
    import http.client

    host, _, port = (server.http or "").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
    run = uuid.uuid4().hex[:8]
    pairs = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    try:
        while time.perf_counter() < deadline:
            path = f"/v1/files/bench/http-small/{run}/{pairs}"
            conn.request("PUT", path, body=payload.small, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status not in (200, 201):
                raise BenchError(f"HTTP PUT answered {response.status}")
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            if hashlib.sha1(response.read()).digest() != payload.small_sha1:
                raise BenchError("a small file came back different over HTTP")
            pairs += 1
    finally:
        conn.close()
    return pairs / (time.perf_counter() - started)


async def concurrent_uploads(server: ValiseProcess, payload: Payload, s: Settings) -> float:
    """Seconds for ``concurrent`` parallel uploads of ``concurrent_size`` bytes each."""
    run = uuid.uuid4().hex[:8]
    view = payload.view[: s.concurrent_size]
    wires = [await server.wire() for _ in range(s.concurrent)]
    try:
        started = time.perf_counter()
        await asyncio.gather(
            *(
                w.put(f"bench/conc/{run}/{n}", view, payload.concurrent_sha1)
                for n, w in enumerate(wires)
            )
        )
        elapsed = time.perf_counter() - started
        for n, w in enumerate(wires):
            await w.delete(f"bench/conc/{run}/{n}")
    finally:
        for wire in wires:
            wire.close()
    return elapsed


async def resumable_phases(server: ValiseProcess, payload: Payload, s: Settings) -> dict[str, Any]:
    """Upload MB/s with resumable off and on (alternating), and RESUME's rebuild time."""
    seconds: dict[bool, list[float]] = {False: [], True: []}
    view = payload.view[: s.size]
    for rep in range(s.repeat):
        print(f"resumable off/on, run {rep + 1}/{s.repeat} ...", flush=True)
        for resumable in (False, True):
            key = f"bench/resumable/{uuid.uuid4().hex[:8]}"
            wire = await server.wire()
            try:
                started = time.perf_counter()
                await wire.put(key, view, payload.sha1, resumable=resumable)
                seconds[resumable].append(time.perf_counter() - started)
                await wire.delete(key)
            finally:
                wire.close()
    # A whole file stored and its connection gone: each RESUME rebuilds its SHA-1.
    wire = await server.wire()
    upload_id = (await wire.put("bench/resume", view, None, resumable=True))["upload_id"]
    offset = 0
    for _ in range(10):
        wire.close()
        # A RESUME stops the old connection at once: let it store what it has first.
        await asyncio.sleep(2)
        wire = await server.wire()
        offset = (await wire.request(FrameType.RESUME, {"upload_id": upload_id}))["offset"]
        if offset == s.size:
            break
        for at in range(offset, s.size, wire.max_frame):
            piece = view[at : at + wire.max_frame]
            await wire.send(HEADER.pack(FrameType.DATA, len(piece)), piece)
    rebuild: list[float] = []
    for _ in range(s.repeat):
        wire.close()
        wire = await server.wire()
        started = time.perf_counter()
        resumed = await wire.request(FrameType.RESUME, {"upload_id": upload_id})
        rebuild.append(time.perf_counter() - started)
        if resumed["offset"] != s.size:
            raise BenchError(f"RESUME found {resumed['offset']} bytes, not {s.size}")
    await wire.request(FrameType.ABORT, {})
    wire.close()
    return {
        "upload_mbps_not_resumable": mbps(s.size, seconds[False]),
        "upload_mbps_resumable": mbps(s.size, seconds[True]),
        "resume_seconds": summary(rebuild),
        "resume_rebuild_mbps": mbps(s.size, rebuild),
    }


# -- the run ----------------------------------------------------------------------


def make_payload(s: Settings) -> Payload:
    size = max(s.size, s.concurrent_size)
    data = os.urandom(size)
    view = memoryview(data)
    small = os.urandom(4096)
    return Payload(
        data=data,
        view=view,
        sha1=hashlib.sha1(view[: s.size]).digest(),
        small=small,
        small_sha1=hashlib.sha1(small).digest(),
        concurrent_sha1=hashlib.sha1(view[: s.concurrent_size]).digest(),
    )


def mbps(size: int, seconds: list[float]) -> dict[str, Any]:
    return summary([size / MB / sec for sec in seconds])


def valkey_pids(vk: EmbeddedValkey | LocalCluster) -> dict[str, int]:
    nodes = vk.nodes if isinstance(vk, LocalCluster) else [vk]
    return {f"valkey{i or ''}": node.process.pid for i, node in enumerate(nodes) if node.process}


async def run_all(vk: EmbeddedValkey | LocalCluster, s: Settings, workdir: Path) -> dict[str, Any]:
    print(f"generating {s.size / MB:.0f} MB of random data ...", flush=True)
    payload = make_payload(s)
    client_cls = project_client(s.client)
    raw = raw_client(vk.url, s.target.cluster)
    if s.target.cluster:
        await raw.initialize()
    info = await raw.info(
        "server", **({"target_nodes": raw.get_primaries()[0]} if s.target.cluster else {})
    )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "valkey": info.get("valkey_version"),
            **calibrate(payload.view),
        },
        "settings": {
            "size": s.size,
            "repeat": s.repeat,
            "chunk_sizes": s.chunk_sizes,
            "small_seconds": s.small_seconds,
            "small_connections": s.small_connections,
            "concurrent": s.concurrent,
            "concurrent_size": s.concurrent_size,
            "client": "client.aio.AsyncClient" if client_cls else "tests.tools.bench.Wire",
            "target": s.target.describe(),
        },
        "chunks": {},
    }
    try:
        for chunk in s.chunk_sizes:
            with valise_server(vk.url, chunk, workdir, target=s.target) as server:
                pids = {"server": server.pid, **valkey_pids(vk)}
                sets, gets, ups, downs, rss = [], [], [], [], []
                cpu_up: list[dict[str, float]] = []
                cpu_down: list[dict[str, float]] = []
                for rep in range(s.repeat):
                    print(f"chunk {chunk // MIB} MiB, run {rep + 1}/{s.repeat} ...", flush=True)
                    set_s, get_s = await raw_set_get(raw, payload, s.size, chunk)
                    sets.append(set_s)
                    gets.append(get_s)
                    meters = [CpuMeter(pids), CpuMeter(pids)]
                    with PeakRss(server.pid) as peak:
                        up_s, down_s = await valise_up_down(
                            server, payload, s.size, client_cls, meters
                        )
                    ups.append(up_s)
                    downs.append(down_s)
                    rss.append(peak.mib)
                    cpu_up.append(meters[0].used)
                    cpu_down.append(meters[1].used)
                entry: dict[str, Any] = {
                    "raw_set_mbps": mbps(s.size, sets),
                    "raw_get_mbps": mbps(s.size, gets),
                    "upload_mbps": mbps(s.size, ups),
                    "download_mbps": mbps(s.size, downs),
                    "upload_ratio": summary([g / u for g, u in zip(sets, ups, strict=True)]),
                    "download_ratio": summary([g / d for g, d in zip(gets, downs, strict=True)]),
                    "server_rss_mib": summary(rss),
                    "cpu_seconds_upload": cpu_up,
                    "cpu_seconds_download": cpu_down,
                }
                if chunk == s.default_chunk:
                    entry.update(await default_chunk_phases(server, raw, payload, s, pids))
                results["chunks"][str(chunk)] = entry
    finally:
        await raw.aclose()
        if not s.target.cluster:
            await raw.connection_pool.disconnect()
    return results


async def default_chunk_phases(
    server: ValiseProcess, raw: Any, payload: Payload, s: Settings, pids: dict[str, int]
) -> dict[str, Any]:
    small = await bench_small.phase(server, raw, payload, s, pids)
    seconds, rss = [], []
    for rep in range(s.repeat):
        print(f"{s.concurrent} concurrent uploads, run {rep + 1}/{s.repeat} ...", flush=True)
        with PeakRss(server.pid) as peak:
            seconds.append(await concurrent_uploads(server, payload, s))
        rss.append(peak.mib)
    http: dict[str, Any] = {}
    if server.http is not None and shutil.which("curl"):
        ups, downs = [], []
        for rep in range(s.repeat):
            print(f"HTTP door with curl, run {rep + 1}/{s.repeat} ...", flush=True)
            up_s, down_s = await asyncio.to_thread(curl_up_down, server, payload, s.size)
            ups.append(up_s)
            downs.append(down_s)
        http = {"http_upload_mbps": mbps(s.size, ups), "http_download_mbps": mbps(s.size, downs)}
    if server.http is not None and server.tls is None:
        print("HTTP small files on one keep-alive connection ...", flush=True)
        http["http_small_pairs_per_s"] = await asyncio.to_thread(
            http_small_files, server, payload, s.small_seconds
        )
    if server.tls is None:  # tus through tuspy, when it is installed (tests/tools/bench_tus.py)
        view = payload.view[: s.size]
        http.update(await bench_tus.phases(server.http, server.token, view, s.repeat, mbps))
    print("change events: small commits without, then with a subscriber ...", flush=True)
    quiet = await small_commits(server, payload, s, subscribed=False)
    heard = await small_commits(server, payload, s, subscribed=True)
    return {
        **http,
        "events": {"commits_per_s_unsubscribed": quiet["commits_per_s"], **heard},
        **small,
        "concurrent_mbps": mbps(s.concurrent * s.concurrent_size, seconds),
        "concurrent_rss_mib": summary(rss),
        **await resumable_phases(server, payload, s),
    }


def calibrate(data: memoryview) -> dict[str, float]:
    """How fast this machine is right now, to compare runs of different days.

    Shared virtual machines drift by 2-4x between days; the ratios to raw
    Valkey absorb some of it, the small-file rate (pure Python work) none.
    """
    started = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    loop_ns = (time.perf_counter() - started) * 1000
    piece = data[: 64 * MIB]
    started = time.perf_counter()
    hashlib.sha1(piece).digest()
    sha1_mbps = len(piece) / MB / (time.perf_counter() - started)
    return {"python_loop_ns": round(loop_ns, 1), "sha1_mbps": round(sha1_mbps)}


def print_table(results: dict[str, Any], s: Settings) -> None:
    m = results["machine"]
    print()
    print(
        f"Valise benchmark {results['date']}: {m['cpus']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, valkey {m['valkey']}, client {results['settings']['client']}"
    )
    print(
        f"machine speed now: {m['python_loop_ns']} ns per Python loop step, "
        f"SHA-1 {m['sha1_mbps']} MB/s on one core (compare runs of different days by these)"
    )
    print(f"target: {results['settings']['target']}")
    print(f"{s.size / MB:.0f} MB per transfer, {s.repeat} run(s): median (min-max); MB = 10^6 B")
    head = (
        f"{'chunk':>7} | {'raw SET MB/s':>18} | {'raw GET MB/s':>20} | {'upload MB/s':>18} | "
        f"{'x SET':>16} | {'download MB/s':>18} | {'x GET':>16} | {'server RSS MiB':>16}"
    )
    print(head)
    print("-" * len(head))
    for chunk, e in results["chunks"].items():
        print(
            f"{int(chunk) // MIB:>3} MiB | {fmt(e['raw_set_mbps']):>18} | "
            f"{fmt(e['raw_get_mbps']):>20} | {fmt(e['upload_mbps']):>18} | "
            f"{fmt(e['upload_ratio'], 2):>16} | {fmt(e['download_mbps']):>18} | "
            f"{fmt(e['download_ratio'], 2):>16} | {fmt(e['server_rss_mib']):>16}"
        )
    e = results["chunks"].get(str(s.default_chunk))
    if e and "small_pairs_per_s" in e:
        print()
        bench_small.report(e, s, fmt)
        if "http_upload_mbps" in e:
            up = e["http_upload_mbps"]["median"] / e["upload_mbps"]["median"]
            down = e["http_download_mbps"]["median"] / e["download_mbps"]["median"]
            print(
                f"HTTP door, curl, {s.size / MB:.0f} MB: upload {fmt(e['http_upload_mbps'])} MB/s "
                f"({up:.2f} x the binary door), download {fmt(e['http_download_mbps'])} MB/s "
                f"({down:.2f} x the binary door)"
            )
        bench_tus.report(e, s.size, fmt)
        if "http_small_pairs_per_s" in e:
            print(
                f"HTTP small files (4 KiB, one keep-alive connection, http.client): "
                f"{e['http_small_pairs_per_s']:.0f} PUT+GET pairs/s"
            )
        print(
            f"{s.concurrent} concurrent uploads of {s.concurrent_size / MB:.0f} MB: "
            f"{fmt(e['concurrent_mbps'])} MB/s in all, server peak RSS "
            f"{fmt(e['concurrent_rss_mib'])} MiB"
        )
        print(
            f"resumable uploads: {fmt(e['upload_mbps_resumable'])} MB/s, not resumable "
            f"{fmt(e['upload_mbps_not_resumable'])} MB/s; RESUME with {s.size / MB:.0f} MB "
            f"stored: {fmt(e['resume_seconds'], 2)} s to its OK "
            f"(SHA-1 rebuilt at {fmt(e['resume_rebuild_mbps'])} MB/s)"
        )
    if e and "events" in e:
        ev = e["events"]
        print(
            f"change events (4 KiB PUTs, {s.small_connections} connections): "
            f"{ev['commits_per_s_unsubscribed']:.0f} commits/s, "
            f"{ev['commits_per_s']:.0f} with a subscriber; OK -> EVENT "
            f"p50 {ev['event_p50_ms']:.2f} ms, p99 {ev['event_p99_ms']:.2f} ms"
            + (f", {ev['events_missing']:.0f} EVENTs missing" if ev["events_missing"] else "")
        )
    print(f"figures written to {s.json_path}")


# -- profile mode ---------------------------------------------------------------


async def profile_transfers(vk: EmbeddedValkey | LocalCluster, s: Settings, out: Path) -> None:
    """One upload and one download, each under its own cProfile'd server process."""
    data = os.urandom(s.size)
    view = memoryview(data)
    sha1 = hashlib.sha1(data).digest()
    key = f"bench/profile/{uuid.uuid4().hex[:8]}"
    for phase in ("upload", "download"):
        prof = out / f"{phase}.prof"
        with valise_server(vk.url, s.default_chunk, out, profile=prof, target=s.target) as server:
            wire = await server.wire()
            try:
                started = time.perf_counter()
                if phase == "upload":
                    await wire.put(key, view, sha1)
                else:
                    _, digest = await wire.get(key)
                    if digest != sha1:
                        raise BenchError("profiled download returned other bytes")
                    await wire.delete(key)
                seconds = time.perf_counter() - started
            finally:
                wire.close()
        print(f"\n== {phase}: {s.size / MB:.0f} MB in {seconds:.2f} s under cProfile ({prof})")
        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(15)
    prof = out / "small.prof"
    small = os.urandom(4096)
    payload = Payload(data, view, sha1, small, hashlib.sha1(small).digest(), sha1)
    with valise_server(vk.url, s.default_chunk, out, profile=prof, target=s.target) as server:
        result = await small_files(server, payload, s)
    print(
        f"\n== small files: {result['pairs_per_s']:.0f} PUT+GET pairs/s for "
        f"{s.small_seconds:.0f} s under cProfile ({prof})"
    )
    pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)


# -- entry point --------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python -m tests.tools.bench", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (a smoke run)")
    p.add_argument("--size", type=parse_size, help="bytes per big transfer (default 1GiB)")
    p.add_argument("--repeat", type=int, help="runs per measurement (default 3)")
    p.add_argument("--chunk-sizes", help="comma-separated (default 1MiB,4MiB,8MiB,32MiB)")
    p.add_argument("--default-chunk", type=parse_size, default=8 * MIB, help="for 3 and 4")
    p.add_argument("--small-seconds", type=float, help="duration of the small-file test (20)")
    p.add_argument("--small-connections", type=int, default=32)
    p.add_argument("--concurrent", type=int, default=16, help="parallel uploads for 4")
    p.add_argument("--concurrent-size", type=parse_size, help="bytes each (default 256MiB)")
    p.add_argument("--json", type=Path, default=Path("bench-results.json"))
    p.add_argument("--client", choices=["auto", "aio", "own"], default="auto")
    p.add_argument("--profile", type=Path, help="only profile an upload, a download, small files")
    p.add_argument("--valkey-cluster", action="store_true", help="a local 3-primary cluster")
    p.add_argument("--auth", action="store_true", help="a tokens file; clients send a token")
    p.add_argument("--tls", action="store_true", help="the server listens with TLS (private CA)")
    p.add_argument("--server-args", default="", help="more server flags, e.g. '--workers 2'")
    p.add_argument("--compare", metavar="REF", help="A/B: this server against REF's, interleaved")
    p.add_argument("--small-only", action="store_true", help="with --compare: small files only")
    p.add_argument("--server-python", metavar="PATH", help="the server's interpreter (a venv's)")
    p.add_argument("--ref-python", metavar="PATH", help="with --compare: REF's (--server-python)")
    p.add_argument("--ref-server-args", help="with --compare: REF's (default --server-args)")
    ns = p.parse_args(argv)
    quick = ns.quick
    chunks = ns.chunk_sizes or "1MiB,4MiB,8MiB,32MiB"
    chunk_sizes = [parse_size(c) for c in chunks.split(",")]
    default_size = 512 * MIB if ns.profile else (64 * MIB if quick else 1024 * MIB)
    s = Settings(
        size=ns.size or default_size,
        repeat=ns.repeat or (1 if quick else 3),
        chunk_sizes=chunk_sizes,
        default_chunk=ns.default_chunk if ns.default_chunk in chunk_sizes else chunk_sizes[0],
        small_seconds=ns.small_seconds or (3.0 if quick or ns.profile else 20.0),
        small_connections=ns.small_connections,
        concurrent=ns.concurrent,
        concurrent_size=ns.concurrent_size or (16 * MIB if quick else 256 * MIB),
        json_path=ns.json,
        client=ns.client,
        target=Target(ns.valkey_cluster, shlex.split(ns.server_args), ns.auth, ns.tls),
    )
    if ns.server_python:
        s.target.python = ns.server_python
        s.target.python_version = bench_small.check_python(ns.server_python)
    from tests.tools.compare import ref_target

    ns.ref_target = ref_target(s.target, ns.ref_python, ns.ref_server_args)
    if ns.profile:
        s.default_chunk = ns.default_chunk
    return s, ns


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    s, ns = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="valise-bench-"))
    vk: EmbeddedValkey | LocalCluster = (
        LocalCluster(maxmemory=default_maxmemory() // 3) if ns.valkey_cluster else EmbeddedValkey()
    )
    try:
        vk.start()
        if ns.profile:
            ns.profile.mkdir(parents=True, exist_ok=True)
            asyncio.run(profile_transfers(vk, s, ns.profile))
            return 0
        if ns.compare:
            from tests.tools import compare  # the A/B mode lives in its own module

            ab = asyncio.run(compare.run(vk, s, workdir, ns.compare, ns.small_only, ns.ref_target))
            s.json_path.write_text(json.dumps(ab, indent=2) + "\n")
            compare.print_table(ab, s, ns.compare)
            return 0
        results = asyncio.run(run_all(vk, s, workdir))
        s.json_path.write_text(json.dumps(results, indent=2) + "\n")
        print_table(results, s)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in list(_children):
            _end(proc, timeout=5.0)
        vk.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
