"""Soak test: a real server and Valkey under mixed load, checked byte for byte.

    python -m tests.tools.soak [--minutes 10] [--clients 16] [--quick] [--keys N] [--seed N]

Starts a private valkey-server and ``server.py`` as a subprocess (1 MiB chunks,
grace 2 s, default TTL 60 s, staging TTL 3 s), then N asyncio clients run PUT
(0..8 MiB, overwrites), GET (whole and ranges), STAT, LIST (paginated, by
prefix), DELETE, ABORT mid-upload and abrupt disconnects mid-upload and
mid-download, over loopback, for the duration.

Every reply is checked against what the clients know they stored: a key's
history of versions, each with the window in which it may be visible (from
its PUT until the reply of the write that replaced it). Writes to one key are
serialized, so a read may see one of two versions only while an overwrite is in
flight. A version nobody stored, bytes that differ, a live file reported
missing, or ``corrupt``/``checksum_mismatch`` is a corruption.

At the end, after the staging TTL and the grace, Valkey is scanned (SCAN):
every key must have a TTL and belong to a live file (or to an index, or to a
version whose own TTL is still running out). Exit code 1 on any corruption or
leaked key.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import valkey

from client.loadtest.spawn import start_address
from protocol.frames import FrameType
from storage.embedded import EmbeddedValkey, die_with_parent
from tests.support.harness import ROOT
from tests.support.wire import Reply, WireClient, control, frame

MiB = 1024**2
CHUNK = MiB
MAX_SIZE = 8 * MiB
GRACE = 2
STAGING_TTL = 3
DEFAULT_TTL = 60
#: A client that skipped HELLO keeps DATA at or under this (docs/protocol.md section 1).
MIN_FRAME = 64 * 1024
SAMPLE_EVERY = 5.0
#: Seconds any reply may take under load.
TIMEOUT = 30.0
#: Clock slack when deciding whether a file may have expired.
SLACK = 1.0
#: Codes that mean the bytes were damaged, not just refused.
CORRUPTION_CODES = frozenset({"corrupt", "checksum_mismatch", "size_mismatch"})

# -- file contents ------------------------------------------------------------------

#: Every 64 KiB block starts with (version seed, block index), so a block from
#: another version or another place never passes for the right one.
BLOCK = 64 * 1024
_POOL = random.Random(0x5EED).randbytes(MiB + BLOCK)


def block(seed: int, index: int) -> bytes:
    start = (seed * 7919 + index * 104729) % MiB
    return seed.to_bytes(8, "big") + index.to_bytes(8, "big") + _POOL[start : start + BLOCK - 16]


def content(seed: int, offset: int, length: int) -> bytes:
    """Bytes ``offset .. offset+length`` of the file made from ``seed``."""
    if length <= 0:
        return b""
    first, last = offset // BLOCK, (offset + length - 1) // BLOCK
    joined = b"".join(block(seed, i) for i in range(first, last + 1))
    at = offset - first * BLOCK
    return joined[at : at + length]


# -- what the clients know ------------------------------------------------------------


@dataclass(eq=False)
class Version:
    seed: int
    size: int
    sha1: str
    vid: str | None = None
    #: Known once the commit reply arrives.
    expires_at: float = math.inf


@dataclass(eq=False)
class Entry:
    """A state of a key (a version, or None: absent) and when it may be visible."""

    version: Version | None
    start: float
    end: float = math.inf


class KeyHistory:
    """One key's states. Writes are serialized by ``lock``; reads check against windows."""

    def __init__(self) -> None:
        self.entries: list[Entry] = [Entry(None, -math.inf)]
        self.lock = asyncio.Lock()

    def begin(self, version: Version | None, now: float) -> Entry:
        entry = Entry(version, now)
        self.entries.append(entry)
        return entry

    def commit(self, entry: Entry, now: float) -> None:
        """``entry``'s write was acknowledged: every earlier state ended by now."""
        for earlier in self.entries:
            if earlier is entry:
                break
            earlier.end = min(earlier.end, now)

    def fail(self, entry: Entry) -> None:
        """``entry``'s write certainly did not happen."""
        self.entries.remove(entry)

    def possible(self, t0: float, t1: float, *, skip: Entry | None = None) -> list[Entry]:
        return [e for e in self.entries if e.start <= t1 and e.end >= t0 and e is not skip]

    def absent_possible(self, t0: float, t1: float, *, skip: Entry | None = None) -> bool:
        return any(
            e.version is None or e.version.expires_at - SLACK <= t1
            for e in self.possible(t0, t1, skip=skip)
        )

    def versions(self, t0: float, t1: float, sha1: str) -> list[Version]:
        return [
            e.version
            for e in self.possible(t0, t1)
            if e.version is not None and e.version.sha1 == sha1
        ]

    def last(self) -> Entry:
        return self.entries[-1]

    def prune(self, now: float) -> None:
        """Forget states that ended long ago (no read spans minutes)."""
        keep = [e for e in self.entries[:-1] if e.end >= now - 5 * TIMEOUT]
        self.entries = [*keep, self.entries[-1]]


@dataclass
class Stats:
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    corruptions: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_verified: int = 0

    def corrupt(self, message: str) -> None:
        self.corruptions.append(message)
        print(f"CORRUPTION: {message}", file=sys.stderr, flush=True)


class Soak:
    def __init__(self, host: str, port: int, keys: int, seed: int) -> None:
        self.host = host
        self.port = port
        self.prefix = f"soak/{seed:x}/"
        self.keys = [f"{self.prefix}k{i}" for i in range(keys)]
        self.history = {key: KeyHistory() for key in self.keys}
        self.vids: dict[str, Version] = {}
        self.stats = Stats()
        self._seed = seed << 32

    def new_seed(self) -> int:
        self._seed += 1
        return self._seed


class Drop(Exception):
    """The connection is in an unknown state (or was closed on purpose): reconnect."""


# -- one client ------------------------------------------------------------------------


class Client:
    def __init__(self, soak: Soak, rng: random.Random) -> None:
        self.soak = soak
        self.stats = soak.stats
        self.rng = rng
        self.wire: WireClient | None = None
        self.max_frame = MIN_FRAME

    async def connect(self) -> WireClient:
        if self.wire is None:
            wire = await WireClient.connect(self.soak.host, self.soak.port)
            self.wire = wire
            self.max_frame = MIN_FRAME
            if self.rng.random() < 0.8:
                hello = await self.reply(wire.request(FrameType.HELLO, {"version": 1}))
                self.max_frame = int(hello.body["max_frame"])
        return self.wire

    def drop(self, *, hard: bool = True) -> None:
        if self.wire is not None:
            if hard:
                self.wire.writer.transport.abort()
            else:
                self.wire.writer.close()
            self.wire = None

    async def reply(self, pending: Awaitable[Reply]) -> Reply:
        async with asyncio.timeout(TIMEOUT):
            return self.record(await pending)

    def record(self, reply: Reply) -> Reply:
        """Count an ERROR by code; a fatal one ends the connection."""
        if not reply.ok:
            code = str(reply.body.get("code"))
            self.stats.errors[code] += 1
            if code in CORRUPTION_CODES:
                self.stats.corrupt(f"server said {code}: {reply.body.get('message')}")
            if reply.body.get("fatal"):
                self.drop()
        return reply

    async def next_frame(self, wire: WireClient) -> Any:
        got = await wire.frame(TIMEOUT)
        if got is None:
            raise Drop("connection closed mid-stream")
        return got

    async def run(self, deadline: float) -> None:
        ops: list[tuple[Callable[[], Awaitable[None]], int]] = [
            (self.put, 28),
            (self.get, 20),
            (self.get_range, 14),
            (self.stat, 10),
            (self.list, 6),
            (self.delete, 6),
            (self.abort_upload, 5),
            (self.drop_upload, 5),
            (self.drop_download, 6),
        ]
        choices, weights = zip(*ops, strict=True)
        while time.monotonic() < deadline:
            op = self.rng.choices(choices, weights)[0]
            try:
                await op()
            except (Drop, ConnectionError, OSError, TimeoutError, AssertionError) as exc:
                if not isinstance(exc, Drop):
                    self.stats.errors[f"client:{type(exc).__name__}"] += 1
                self.drop()
        self.drop(hard=False)

    # -- choices ---------------------------------------------------------------------

    def pick_key(self) -> str:
        return self.rng.choice(self.soak.keys)

    def pick_size(self) -> int:
        r = self.rng.random()
        if r < 0.05:
            return 0
        if r < 0.25:
            return self.rng.randint(1, 64 * 1024)
        if r < 0.5:
            return self.rng.randint(64 * 1024, CHUNK)
        if r < 0.6:
            return max(0, min(MAX_SIZE, CHUNK * self.rng.randint(1, 8) + self.rng.randint(-1, 1)))
        return self.rng.randint(CHUNK, MAX_SIZE)

    def frame_size(self) -> int:
        return self.rng.choice([MIN_FRAME, self.max_frame, self.rng.randint(1, self.max_frame)])

    async def send_data(self, wire: WireClient, data: bytes, upto: int) -> None:
        step = self.frame_size()
        for at in range(0, upto, step):
            await wire.send(frame(FrameType.DATA, data[at : min(at + step, upto)]))
        self.stats.bytes_up += upto

    # -- writes ----------------------------------------------------------------------

    async def put(self) -> None:
        key = self.pick_key()
        history = self.soak.history[key]
        size = self.pick_size()
        seed = self.soak.new_seed()
        data = content(seed, 0, size)
        version = Version(seed, size, hashlib.sha1(data).hexdigest())
        request: dict[str, Any] = {"key": key}
        if self.rng.random() < 0.5:
            request["size"] = size
        if self.rng.random() < 0.2:
            request["ttl"] = self.rng.randint(20, 120)
        async with history.lock:
            self.stats.ops["put_overwrite" if history.last().version else "put_new"] += 1
            if size > CHUNK:
                self.stats.ops["put_multichunk"] += 1
            entry = history.begin(version, time.time())
            sent_end = False
            try:
                wire = await self.connect()
                await wire.send(control(FrameType.PUT, request))
                await self.send_data(wire, data, size)
                digest = bytes.fromhex(version.sha1)
                spelled = digest if self.rng.random() < 0.7 else version.sha1.encode()
                sent_end = True
                await wire.send(frame(FrameType.END, spelled))
                accepted = await self.reply(wire.reply())
                if not accepted.ok:
                    history.fail(entry)
                    return
                version.vid = str(accepted.body["upload_id"])
                self.soak.vids[version.vid] = version
                stored = await self.reply(wire.reply())
            except BaseException:
                if not sent_end:
                    history.fail(entry)
                raise
            if not stored.ok:
                history.fail(entry)
                return
            if stored.body.get("sha1") != version.sha1 or stored.body.get("size") != size:
                self.stats.corrupt(f"PUT {key}: stored info {stored.body} is not what was sent")
            version.expires_at = float(stored.body["expires_at"])
            history.commit(entry, time.time())
            history.prune(time.time())

    async def delete(self) -> None:
        key = self.pick_key()
        history = self.soak.history[key]
        self.stats.ops["delete"] += 1
        async with history.lock:
            t0 = time.time()
            entry = history.begin(None, t0)
            wire = await self.connect()
            reply = await self.reply(wire.request(FrameType.DELETE, {"key": key}))
            t1 = time.time()
            if not reply.ok:
                history.fail(entry)
                return
            if not reply.body["deleted"] and not history.absent_possible(t0, t1, skip=entry):
                self.stats.corrupt(f"DELETE {key}: deleted=false while a live version existed")
            history.commit(entry, t1)

    async def partial_upload(self) -> tuple[WireClient, int]:
        """PUT and part of its DATA, on a key others may be reading: it must never show."""
        wire = await self.connect()
        size = max(1, self.pick_size())
        data = content(self.soak.new_seed(), 0, size)
        await wire.send(control(FrameType.PUT, {"key": self.pick_key(), "size": size}))
        await self.send_data(wire, data, self.rng.randint(0, size - 1))
        return wire, size

    async def abort_upload(self) -> None:
        self.stats.ops["abort"] += 1
        wire, _ = await self.partial_upload()
        await wire.send(control(FrameType.ABORT))
        accepted = await self.reply(wire.reply())
        if not accepted.ok:
            return
        aborted = await self.reply(wire.reply())
        if aborted.ok and aborted.body != {"aborted": True}:
            raise Drop(f"unexpected ABORT reply {aborted.body}")

    async def drop_upload(self) -> None:
        self.stats.ops["drop_upload"] += 1
        wire, _ = await self.partial_upload()
        if self.rng.random() < 0.5:
            await self.reply(wire.reply())
        self.drop(hard=self.rng.random() < 0.5)

    # -- reads -----------------------------------------------------------------------

    def known_size(self, key: str) -> int:
        version = self.soak.history[key].last().version
        return version.size if version is not None else MAX_SIZE // 2

    async def get(self) -> None:
        self.stats.ops["get"] += 1
        await self.download(self.pick_key(), None, None)

    async def get_range(self) -> None:
        self.stats.ops["get_range"] += 1
        key = self.pick_key()
        size = self.known_size(key)
        offset = self.rng.randint(0, size + (10 if self.rng.random() < 0.1 else 0))
        length = None if self.rng.random() < 0.3 else self.rng.randint(0, size)
        await self.download(key, offset, length)

    async def drop_download(self) -> None:
        self.stats.ops["drop_download"] += 1
        await self.download(self.pick_key(), None, None, drop_after=self.rng.randint(0, 3))

    async def download(
        self, key: str, offset: int | None, length: int | None, drop_after: int | None = None
    ) -> None:
        history = self.soak.history[key]
        request: dict[str, Any] = {"key": key}
        if offset is not None:
            request["offset"] = offset
        if length is not None:
            request["length"] = length
        wire = await self.connect()
        t0 = time.time()
        head = await self.reply(wire.request(FrameType.GET, request))
        t1 = time.time()
        if not head.ok:
            self.check_refusal(history, key, head, t0, t1, offset or 0)
            return
        version = self.match(history, key, head.body, t0, t1)
        if version is None:
            raise Drop("unknown version")
        start = offset or 0
        expected_length = (
            version.size - start if length is None else min(length, version.size - start)
        )
        if head.body.get("offset") != start or head.body.get("length") != expected_length:
            self.stats.corrupt(
                f"GET {key} {request}: OK says {head.body}, expected {start}+{expected_length}"
            )
            raise Drop("wrong range")
        received = bytearray()
        frames = 0
        while True:
            if drop_after is not None and frames >= drop_after:
                raise Drop("on purpose")
            got = await self.next_frame(wire)
            frames += 1
            if got.type is FrameType.DATA:
                received += got.payload
                continue
            break
        expected = content(version.seed, start, expected_length)
        if not expected.startswith(received):
            self.stats.corrupt(f"GET {key} {request}: bytes differ from the version it announced")
            return
        if got.type is FrameType.ERROR:
            self.record(Reply(FrameType.ERROR, json.loads(got.payload)))
            return
        if got.type is not FrameType.END or len(received) != expected_length:
            self.stats.corrupt(f"GET {key} {request}: stream ended short ({got.type.name})")
            raise Drop("short stream")
        # A whole file's END is the SHA-1 recorded at upload: the same bytes' digest.
        digest = hashlib.sha1(expected).hexdigest()
        if got.payload not in (bytes.fromhex(digest), digest.encode()):
            self.stats.corrupt(f"GET {key} {request}: END digest is not the range's SHA-1")
        self.stats.bytes_verified += len(received)

    def match(
        self, history: KeyHistory, key: str, info: dict[str, Any], t0: float, t1: float
    ) -> Version | None:
        """The version an OK describes, if it may be visible between ``t0`` and ``t1``."""
        for version in history.versions(t0, t1, str(info.get("sha1"))):
            if version.size == info.get("size"):
                return version
        self.stats.corrupt(f"{key}: server returned a version nobody stored then ({info})")
        return None

    def check_refusal(
        self, history: KeyHistory, key: str, reply: Reply, t0: float, t1: float, offset: int
    ) -> None:
        code = reply.body.get("code")
        if code == "not_found" and not history.absent_possible(t0, t1):
            self.stats.corrupt(f"{key}: not_found while a live version existed")
        if code == "bad_range":
            sizes = [e.version.size for e in history.possible(t0, t1) if e.version is not None]
            if not any(size < offset for size in sizes):
                self.stats.corrupt(f"{key}: bad_range for offset {offset} within {sizes}")

    async def stat(self) -> None:
        self.stats.ops["stat"] += 1
        key = self.pick_key()
        history = self.soak.history[key]
        wire = await self.connect()
        t0 = time.time()
        reply = await self.reply(wire.request(FrameType.STAT, {"key": key}))
        t1 = time.time()
        if reply.ok:
            self.match(history, key, reply.body, t0, t1)
        else:
            self.check_refusal(history, key, reply, t0, t1, 0)

    async def list(self) -> None:
        self.stats.ops["list"] += 1
        rng = self.rng
        tail = rng.choice(
            ["", "k", f"k{rng.randint(0, 9)}", f"k{rng.randrange(len(self.soak.keys))}"]
        )
        prefix = self.soak.prefix + tail
        limit = rng.choice([None, 1, 7, 50, 1000])
        wire = await self.connect()
        t0 = time.time()
        cursor: str | None = None
        files: list[dict[str, Any]] = []
        for _ in range(10_000):
            request = {"prefix": prefix, "cursor": cursor, "limit": limit}
            reply = await self.reply(wire.request(FrameType.LIST, request))
            if not reply.ok:
                return
            files += reply.body["files"]
            cursor = reply.body["cursor"]
            if cursor is None:
                break
        t1 = time.time()
        names = [str(info["key"]) for info in files]
        if [n.encode() for n in names] != sorted({n.encode() for n in names}):
            self.stats.corrupt(f"LIST {prefix!r}: keys out of order or repeated")
        for info in files:
            key = str(info["key"])
            if key not in self.soak.history or not key.startswith(prefix):
                self.stats.corrupt(f"LIST {prefix!r}: listed {key!r}")
            else:
                self.match(self.soak.history[key], key, info, t0, t1)
        for key in self.soak.keys:
            history = self.soak.history[key]
            if key.startswith(prefix) and key not in names and not history.absent_possible(t0, t1):
                self.stats.corrupt(f"LIST {prefix!r}: live file {key!r} missing")


# -- processes -------------------------------------------------------------------------


def start_server(url: str, log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str, int]:
    # --valkey-url through the environment: the URL holds a password, which `ps` shows.
    args = ["--port", "0", "--chunk-size", "1MiB", "--grace", str(GRACE)]
    args += ["--default-ttl", str(DEFAULT_TTL), "--staging-ttl", str(STAGING_TTL)]
    args += ["--shutdown-grace", "2", "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "server.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "VALISE_VALKEY_URL": url},
        preexec_fn=die_with_parent,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode() if ready else ""
    address = start_address(line)
    if address is None:
        stop_process(proc)
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, *address


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


async def sample_rss(pid: int, started: float, samples: list[tuple[float, float]]) -> None:
    while True:
        rss = rss_mib(pid)
        if rss is not None:
            samples.append((time.monotonic() - started, rss))
        await asyncio.sleep(SAMPLE_EVERY)


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope in MiB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return 60 * cov / var if var else 0.0


# -- the final scan --------------------------------------------------------------------


@dataclass
class Scan:
    keys: int = 0
    live_files: int = 0
    leaked: list[str] = field(default_factory=list)
    no_ttl: list[str] = field(default_factory=list)
    expiring: int = 0
    missing: list[str] = field(default_factory=list)
    stale_index: int = 0


def scan_valkey(url: str, soak: Soak) -> Scan:
    """Every key has a TTL and belongs to a live file, an index, or a version still expiring."""
    client: Any = valkey.Valkey.from_url(url)
    result = Scan()
    try:
        names: list[bytes] = list(client.scan_iter(count=1000))
        result.keys = len(names)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.pttl(name)
        ttls = pipe.execute()
        live: dict[str, int] = {}
        infos: dict[str, dict[str, Any]] = {}
        metas: list[bytes] = []
        for name, ttl in zip(names, ttls, strict=True):
            if ttl == -1:
                result.no_ttl.append(name.decode(errors="replace"))
            if b"}:m:" in name:
                metas.append(name)
        for name in metas:
            raw = client.hget(name, "info")
            if raw is None:
                continue
            info = json.loads(raw)
            live[info["vid"]] = int(info["chunks"])
            infos[info["key"]] = info
        check_final(soak, infos)
        result.live_files = len(live)
        now = time.time()
        present: set[bytes] = set(names)
        for name, ttl in zip(names, ttls, strict=True):
            if ttl == -2:
                continue  # expired between SCAN and PTTL
            text = name.decode(errors="replace")
            parts = text.split(":")
            if text.startswith("valise:{") and (text.endswith("}:ix") or text.endswith("}:ex")):
                continue
            if b"}:m:" in name and text.startswith("valise:{"):
                continue
            vid = parts[2] if len(parts) >= 3 and parts[1] in ("c", "s") else None
            if vid is None:
                result.leaked.append(text)
            elif vid in live:
                if parts[1] == "c" and int(parts[3]) >= live[vid]:
                    result.leaked.append(text)
            elif vid in soak.vids and now < soak.vids[vid].expires_at + GRACE + SLACK:
                result.expiring += 1  # its file expired on its own; the grace runs out
            else:
                result.leaked.append(text)
        for vid, chunks in live.items():
            wanted = [f"valise:c:{vid}:{i}".encode() for i in range(chunks)]
            if chunks:
                wanted.append(f"valise:s:{vid}".encode())
            result.missing += [w.decode() for w in wanted if w not in present]
        for index in [n for n in names if n.endswith(b"}:ix")]:
            prefix = index[: -len(b"ix")] + b"m:"
            for member in client.zrange(index, 0, -1):
                if not client.exists(prefix + member):
                    result.stale_index += 1
    finally:
        client.close()
    return result


def check_final(soak: Soak, infos: dict[str, dict[str, Any]]) -> None:
    """Where a key's last write is certain, Valkey holds exactly its result."""
    now = time.time()
    for key in infos:
        if key not in soak.history:
            soak.stats.corrupt(f"scan: a file nobody stored: {key!r}")
    for key, history in soak.history.items():
        if len([e for e in history.entries if e.end == math.inf]) != 1:
            continue  # a write whose outcome is unknown
        last = history.last().version
        stored = infos.get(key)
        if stored is None:
            if last is not None and last.expires_at > now + SLACK:
                soak.stats.corrupt(f"scan: {key!r} lost its live file")
        elif last is None or last.sha1 != stored["sha1"]:
            soak.stats.corrupt(f"scan: {key!r} holds a version its history does not end on")


# -- the run ---------------------------------------------------------------------------


async def run_load(soak: Soak, clients: int, seconds: float, pid: int) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    sampler = asyncio.create_task(sample_rss(pid, started, samples))
    rng = random.Random(soak.new_seed())
    workers = [Client(soak, random.Random(rng.getrandbits(64))) for _ in range(clients)]
    deadline = started + seconds
    progress = asyncio.create_task(report_progress(soak, started, deadline, samples))
    try:
        await asyncio.gather(*(worker.run(deadline) for worker in workers))
    finally:
        progress.cancel()
        sampler.cancel()
        for worker in workers:
            worker.drop()
    return samples


async def report_progress(
    soak: Soak, started: float, deadline: float, samples: list[tuple[float, float]]
) -> None:
    while True:
        await asyncio.sleep(30)
        elapsed = time.monotonic() - started
        ops = sum(n for name, n in soak.stats.ops.items() if name != "put_multichunk")
        print(
            f"  {elapsed:5.0f} s / {deadline - started:.0f} s: {ops} ops, "
            f"{sum(soak.stats.errors.values())} errors, {len(soak.stats.corruptions)} corruptions, "
            f"server RSS {samples[-1][1] if samples else 0:.0f} MiB",
            flush=True,
        )


def summary(
    soak: Soak, scan: Scan, samples: list[tuple[float, float]], seconds: float, log_lines: list[str]
) -> bool:
    stats = soak.stats
    rows: list[tuple[str, str]] = [("duration", f"{seconds:.0f} s")]
    rows += [(f"ops {name}", str(n)) for name, n in sorted(stats.ops.items())]
    # put_multichunk is a subset of the puts, not an op of its own.
    total = sum(n for name, n in stats.ops.items() if name != "put_multichunk")
    rows.append(("ops total", str(total)))
    rows.append(("MiB uploaded", f"{stats.bytes_up / MiB:.0f}"))
    rows.append(("MiB downloaded + verified", f"{stats.bytes_verified / MiB:.0f}"))
    rows += [(f"errors {code}", str(n)) for code, n in sorted(stats.errors.items())]
    rows.append(("corruptions", str(len(stats.corruptions))))
    if samples:
        rss = [r for _, r in samples]
        half = [(t, r) for t, r in samples if t >= seconds / 2]
        rate = slope(half)
        drift = rate * (seconds / 2) / 60
        verdict = "flat" if abs(drift) <= 4 else "GROWING" if drift > 0 else "shrinking"
        rows.append(("server RSS min / max", f"{min(rss):.1f} / {max(rss):.1f} MiB"))
        rows.append(
            ("server RSS slope, 2nd half", f"{rate:+.2f} MiB/min ({drift:+.1f} MiB: {verdict})")
        )
        rows.append(("RSS samples", str(len(samples))))
    rows.append(("valkey keys at the end", str(scan.keys)))
    rows.append(("live files at the end", str(scan.live_files)))
    rows.append(("keys still expiring", str(scan.expiring)))
    rows.append(("stale index entries", str(scan.stale_index)))
    rows.append(("keys without TTL", str(len(scan.no_ttl))))
    rows.append(("leaked keys", str(len(scan.leaked) + len(scan.no_ttl))))
    rows.append(("missing chunks of live files", str(len(scan.missing))))
    rows.append(("server log warnings/errors", str(len(log_lines))))
    width = max(len(name) for name, _ in rows)
    print("\n== soak summary ==")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for label, items in (
        ("corruption", stats.corruptions),
        ("leaked", scan.leaked + scan.no_ttl),
        ("missing", scan.missing),
        ("server log", log_lines),
    ):
        for item in items[:10]:
            print(f"  {label}: {item}")
    return not stats.corruptions and not scan.leaked and not scan.no_ttl and not scan.missing


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.tools.soak", description="Valise soak test"
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="one minute")
    parser.add_argument("--keys", type=int, help="distinct keys (default 4 per client)")
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    args = parser.parse_args(argv)
    seconds = 60.0 if args.quick else args.minutes * 60
    keys = args.keys or 4 * args.clients
    print(
        f"soak: {seconds:.0f} s, {args.clients} clients, {keys} keys, seed {args.seed}", flush=True
    )
    # Ctrl-C and SIGTERM both end the run through the cleanup below (a shell may
    # have started us with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    valkey_server = EmbeddedValkey(maxmemory=4 * 1024**3)
    server: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryFile() as log:
        try:
            valkey_server.start()
            server, host, port = start_server(valkey_server.url, log)
            soak = Soak(host, port, keys, args.seed)
            samples = asyncio.run(run_load(soak, args.clients, seconds, server.pid))
            if server.poll() is not None:
                soak.stats.corrupt(f"server exited with code {server.returncode} during the run")
            print(f"load done; waiting {STAGING_TTL + GRACE + 2} s for staging and grace TTLs")
            time.sleep(STAGING_TTL + GRACE + 2)
            scan = scan_valkey(valkey_server.url, soak)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            if server is not None:
                stop_process(server)
            valkey_server.stop()
        log.seek(0)
        log_lines = [line.decode(errors="replace").rstrip() for line in log if line.strip()]
    ok = summary(soak, scan, samples, seconds, log_lines)
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
