"""Load test: ``python -m client.loadtest [--spawn] [--clients N] [--duration S] ...``.

N asyncio clients (one :class:`~client.aio.AsyncClient` each) run a weighted
mix of PUT, GET, STAT, LIST and DELETE on a shared pool of keys under a unique
prefix, for a duration and/or a number of operations, then delete every key
they created.

Every byte is checked without being kept. A PUT streams a :class:`Payload`:
bytes that are a pure function of (seed, key, version), hashed as they are
handed out, so memory stays at one frame per client. A GET streams into a
:class:`HashSink`. The digest is checked against what the tool may have stored
for that key (:class:`KeyState`): the version at rest when the GET started, or
one whose PUT (or DELETE) by this tool was in flight at some moment of the
GET. Anything else is a corruption, printed loudly; STAT, LIST and DELETE
replies are checked the same way (a mismatch there is an anomaly). Both make
the exit code 1, as does any error from the server or the connection.

Exit codes: 0 clean, 1 corruption, anomaly or error, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import queue
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from ..aio import DEFAULT_PORT, AsyncClient
from ..cli import human_bytes, parse_server
from ..errors import ERRORS_BY_CODE, ConnectionFailed, IntegrityError, NotFound, ValiseError

__all__ = ["HashSink", "KeyState", "LoadTest", "Payload", "main", "parse_mix", "parse_sizes"]

OPS = ("put", "get", "stat", "list", "delete")
DEFAULT_MIX = "put=4,get=4,stat=1,list=1,delete=1"
DEFAULT_SIZES = "4KiB:70,1MiB:25,64MiB:5"
DEFAULT_DURATION = 30.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2}
_UNITS |= {"mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


class UsageError(Exception):
    """A bad option value (exit 2)."""


class SpawnError(Exception):
    """The server started by --spawn did not come up (exit 1)."""


def parse_size(text: str) -> int:
    """``4096``, ``4KiB``, ``1MiB``, ``2GB``."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise UsageError(f"not a size: {text!r} (try 4KiB, 1MiB or 4096)")
    return int(match.group(1)) * _UNITS[unit]


@dataclass(frozen=True, slots=True)
class SizeChoice:
    low: int
    high: int
    weight: float


def parse_sizes(spec: str) -> list[SizeChoice]:
    """``4KiB:70,1MiB:25,64MiB:5``: size:weight; a size may be a range ``1KiB-2MiB``."""
    choices = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        size, sep, weight = item.rpartition(":")
        if not sep:
            size, weight = item, "1"
        low_s, dash, high_s = size.partition("-")
        low = parse_size(low_s)
        high = parse_size(high_s) if dash else low
        try:
            w = float(weight)
        except ValueError:
            raise UsageError(f"bad weight in --sizes item {item!r}") from None
        if high < low or not math.isfinite(w) or w < 0:
            raise UsageError(f"bad --sizes item {item!r}")
        choices.append(SizeChoice(low, high, w))
    if not choices or sum(c.weight for c in choices) <= 0:
        raise UsageError(f"--sizes needs at least one size with a weight > 0: {spec!r}")
    return choices


def parse_mix(spec: str) -> dict[str, float]:
    """``put=4,get=4,stat=1``: weight per operation; operations left out get 0."""
    mix = dict.fromkeys(OPS, 0.0)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition("=")
        name = name.strip().lower()
        if name not in mix:
            raise UsageError(f"unknown operation {name!r} in --mix (known: {', '.join(OPS)})")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise UsageError(f"bad weight in --mix item {item!r}") from None
        if not math.isfinite(mix[name]) or mix[name] < 0:
            raise UsageError(f"bad weight in --mix item {item!r}")
    if sum(mix.values()) <= 0:
        raise UsageError(f"--mix needs an operation with a weight > 0: {spec!r}")
    return mix


# -- data: generated, hashed, never kept ---------------------------------------

_BLOCK = 64 * 1024
_TAG = 16
_POOL = 1024 * 1024


def make_pool(seed: int) -> bytes:
    """The random bytes every payload is cut from (one MiB plus a block of slack)."""
    return random.Random(seed).randbytes(_POOL + _BLOCK)


class Payload:
    """A ``put()`` source: ``size`` bytes determined by (seed, key, version).

    Block ``j`` (64 KiB) is a 16-byte BLAKE2 tag of (seed, key, version, j)
    followed by pool bytes at an offset taken from the tag, so two versions
    never share a block and any read size yields the same bytes. ``digest``
    (SHA-1, hex) is set once the last byte was handed out: a server can only
    store this version after that.
    """

    def __init__(self, pool: bytes, seed: int, key: str, version: int, size: int) -> None:
        self._pool = memoryview(pool)
        self._ident = f"{seed}\0{key}\0{version}\0".encode()
        self.size = size
        self._pos = 0
        self._sha1 = hashlib.sha1()
        self.digest: str | None = None

    def _piece(self, block: int, start: int, stop: int) -> list[bytes | memoryview]:
        tag = hashlib.blake2b(self._ident + block.to_bytes(8, "big"), digest_size=_TAG).digest()
        parts: list[bytes | memoryview] = []
        if start < _TAG:
            parts.append(tag[start : min(stop, _TAG)])
        if stop > _TAG:
            base = int.from_bytes(tag[:4], "big") % _POOL - _TAG
            parts.append(self._pool[base + max(start, _TAG) : base + stop])
        return parts

    def read(self, size: int = -1, /) -> bytes:
        remaining = self.size - self._pos
        n = remaining if size < 0 else min(size, remaining)
        parts: list[bytes | memoryview] = []
        pos, end = self._pos, self._pos + n
        while pos < end:
            block, within = divmod(pos, _BLOCK)
            stop = min(_BLOCK, within + end - pos)
            parts += self._piece(block, within, stop)
            pos += stop - within
        data = b"".join(parts)
        self._sha1.update(data)
        self._pos = end
        if self._pos >= self.size and self.digest is None:
            self.digest = self._sha1.hexdigest()
        return data


class HashSink:
    """A ``get()`` destination that keeps only the SHA-1 and the byte count."""

    def __init__(self) -> None:
        self._sha1 = hashlib.sha1()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._sha1.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._sha1.hexdigest()


class LiveBytes:
    """A transfer's ``progress`` callback: adds new bytes to a shared counter."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._last = 0

    def __call__(self, done: int, total: int | None) -> None:
        if done > self._last:
            self._stats.live_bytes += done - self._last
        self._last = done


# -- what may be stored: one small model per key --------------------------------

#: A state of a key: the SHA-1 (hex) of the stored version, or None when absent.
Value = str | None
Outcome = Literal["done", "maybe", "refused"]


@dataclass(eq=False, slots=True)
class Mutation:
    """A PUT (``payload``) or DELETE (``payload`` None) in flight on one key."""

    payload: Payload | None
    #: Another mutation of the key was in flight at some moment of this one.
    overlapped: bool = False

    def value(self) -> tuple[bool, Value]:
        """(whether this mutation can have taken effect yet, the state it leaves)."""
        if self.payload is None:
            return True, None
        return self.payload.digest is not None, self.payload.digest


@dataclass(eq=False, slots=True)
class Window:
    """What a read (GET, STAT, LIST, DELETE's reply) may observe on one key."""

    settled: set[Value]
    seen: list[Mutation]

    def acceptable(self) -> set[Value]:
        out = set(self.settled)
        for mutation in self.seen:
            possible, value = mutation.value()
            if possible:
                out.add(value)
        return out


class KeyState:
    """The states a key may be in, as far as this tool can know.

    ``settled`` is every state the finished mutations may have left (one
    state, unless mutations overlapped or failed ambiguously). A window opened
    by a read collects each mutation in flight at any moment of the read.
    Over-approximations only: a correct server never trips a check.
    """

    __slots__ = ("inflight", "settled", "versions", "windows")

    def __init__(self) -> None:
        self.settled: set[Value] = {None}
        self.inflight: list[Mutation] = []
        self.windows: list[Window] = []
        self.versions = 0

    def maybe_present(self) -> bool:
        return self.settled != {None} or bool(self.inflight)

    def begin(self, payload: Payload | None) -> Mutation:
        mutation = Mutation(payload, overlapped=bool(self.inflight))
        for other in self.inflight:
            other.overlapped = True
        self.inflight.append(mutation)
        for window in self.windows:
            window.seen.append(mutation)
        return mutation

    def end(self, mutation: Mutation, outcome: Outcome) -> None:
        """``done``: the server said so; ``maybe``: it may or may not have applied it."""
        self.inflight.remove(mutation)
        possible, value = mutation.value()
        if outcome == "refused" or not possible:
            return
        if outcome == "done" and not mutation.overlapped:
            self.settled = {value}
        else:
            self.settled.add(value)

    def watch(self, exclude: Mutation | None = None) -> Window:
        window = Window(set(self.settled), [m for m in self.inflight if m is not exclude])
        self.windows.append(window)
        return window

    def unwatch(self, window: Window) -> None:
        self.windows.remove(window)


def _ambiguous(exc: BaseException) -> bool:
    """Could the server have applied a mutation that failed with ``exc``?

    Non-fatal ERRORs (checksum or size mismatch, storage full or down) say
    nothing was stored. A fatal one, or a failure the client detected itself
    (dropped connection, timeout), leaves it open.
    """
    if isinstance(exc, ValiseError):
        return exc.fatal or exc.code not in ERRORS_BY_CODE
    return True


def _show(values: set[Value]) -> str:
    return ", ".join(sorted(v or "absent" for v in values)) or "nothing"


# -- statistics -------------------------------------------------------------------


@dataclass(slots=True)
class OpStats:
    latencies: list[float] = field(default_factory=list)
    bytes: int = 0
    not_found: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values (None when there are none)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Stats:
    def __init__(self, ops: Sequence[str]) -> None:
        self.ops = {op: OpStats() for op in ops}
        self.cleanup_errors: Counter[str] = Counter()
        self.corruptions: list[dict[str, Any]] = []
        self.anomalies: list[dict[str, Any]] = []
        self.error_samples: list[dict[str, Any]] = []
        self.live_bytes = 0
        self.done = 0

    @property
    def error_count(self) -> int:
        per_op = sum(sum(s.errors.values()) for s in self.ops.values())
        return per_op + sum(self.cleanup_errors.values())

    def errors_by_code(self) -> Counter[str]:
        total: Counter[str] = Counter(self.cleanup_errors)
        for s in self.ops.values():
            total.update(s.errors)
        return total


# -- the run ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    clients: int
    duration: float | None
    count: int | None
    sizes: list[SizeChoice]
    sizes_spec: str
    mix: dict[str, float]
    prefix: str
    keys: int
    seed: int
    timeout: float
    retries: int
    progress: bool
    quiet: bool


class LoadTest:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.ops = [op for op in OPS if settings.mix[op] > 0]
        self.weights = [settings.mix[op] for op in self.ops]
        self.stats = Stats(self.ops)
        self.keys = [f"{settings.prefix}k{i:05d}" for i in range(settings.keys)]
        self.states = {key: KeyState() for key in self.keys}
        self.pool = make_pool(settings.seed)
        self.server_info: dict[str, Any] = {}
        self.ttl: int | None = None
        self.started = 0
        self.stopping = False
        self.interrupted = False
        self.t0 = 0.0
        self.elapsed = 0.0
        self.cleanup: dict[str, Any] = {"deleted": 0, "remaining": None}
        self._deadline = math.inf
        self._line_shown = False
        self._said: set[tuple[str, str]] = set()

    # -- output while running

    def say(self, message: str) -> None:
        """A line on stderr that does not collide with the progress line."""
        prefix = "\r\x1b[K" if self._line_shown else ""
        self._line_shown = False
        print(prefix + message, file=sys.stderr, flush=True)

    async def _progress(self) -> None:
        last_done, last_bytes, last_t = 0, 0, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            dt = max(now - last_t, 1e-6)
            done, nbytes = self.stats.done, self.stats.live_bytes
            line = (
                f"[{now - self.t0:5.0f} s] {(done - last_done) / dt:8.1f} ops/s "
                f"{(nbytes - last_bytes) / dt / 1e6:8.1f} MB/s  ops {done}  "
                f"errors {self.stats.error_count}  corruptions {len(self.stats.corruptions)}"
            )
            sys.stderr.write("\r" + line + "\x1b[K")
            sys.stderr.flush()
            self._line_shown = True
            last_done, last_bytes, last_t = done, nbytes, now

    # -- the load

    def client(self, name: str, retries: int | None = None) -> AsyncClient:
        return AsyncClient(
            self.s.host,
            self.s.port,
            timeout=self.s.timeout,
            retries=self.s.retries if retries is None else retries,
            client_name=f"valise-loadtest/{name}",
        )

    async def preflight(self) -> None:
        """HELLO once: fail fast on a wrong address, learn the server's limits."""
        async with self.client("preflight") as client:
            self.server_info = await client.hello()
            # Cleanup deletes whatever is left under the prefix: it must start empty.
            async for info in client.list(self.s.prefix, limit=1):
                raise UsageError(f"--prefix {self.s.prefix!r} holds keys ({info.get('key')!r})")
        max_size = self.server_info.get("max_file_size")
        biggest = max(c.high for c in self.s.sizes if c.weight > 0)
        if isinstance(max_size, int) and biggest > max_size:
            raise UsageError(
                f"--sizes asks for {human_bytes(biggest)}, the server's "
                f"max_file_size is {human_bytes(max_size)}"
            )
        max_ttl = self.server_info.get("max_ttl")
        if self.s.duration is not None and isinstance(max_ttl, int):
            # Long enough to outlive the run, short enough that keys left by
            # a killed run do not stay for the server's default TTL.
            self.ttl = max(1, min(max_ttl, int(self.s.duration) + 600))

    def _claim(self) -> bool:
        if self.stopping or time.monotonic() >= self._deadline:
            return False
        if self.s.count is not None and self.started >= self.s.count:
            return False
        self.started += 1
        return True

    async def run(self) -> None:
        await self.preflight()
        self.t0 = time.monotonic()
        if self.s.duration is not None:
            self._deadline = self.t0 + self.s.duration
        progress = asyncio.create_task(self._progress()) if self.s.progress else None
        workers = [asyncio.create_task(self._worker(i)) for i in range(self.s.clients)]
        try:
            await asyncio.gather(*workers)
        finally:
            self.elapsed = time.monotonic() - self.t0
            for task in [*workers, progress]:
                if task is not None:
                    task.cancel()
            await asyncio.gather(*workers, *filter(None, [progress]), return_exceptions=True)
            if self._line_shown:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
                self._line_shown = False
        await self._cleanup()

    async def _worker(self, index: int) -> None:
        rng = random.Random(f"{self.s.seed}/{index}")
        async with self.client(str(index)) as client:
            while self._claim():
                op = rng.choices(self.ops, self.weights)[0]
                await self._one(client, op, rng)

    def _pick_key(self, op: str, rng: random.Random) -> str:
        key: str = rng.choice(self.keys)
        if op in ("get", "stat"):
            # Prefer keys that hold something, so reads mostly read data.
            for _ in range(3):
                if self.states[key].maybe_present():
                    break
                key = rng.choice(self.keys)
        return key

    async def _one(self, client: AsyncClient, op: str, rng: random.Random) -> None:
        stats = self.stats.ops[op]
        key = self._pick_key(op, rng)
        started = time.perf_counter()
        try:
            if op == "put":
                nbytes = await self._put(client, key, rng)
            elif op == "get":
                nbytes = await self._get(client, key)
            elif op == "stat":
                nbytes = await self._stat(client, key)
            elif op == "delete":
                nbytes = await self._delete(client, key)
            else:
                nbytes = await self._list(client)
        except ValiseError as exc:
            self._error(op, key, exc.code, str(exc), fatal=exc.fatal)
            if isinstance(exc, IntegrityError):
                self._corruption(op, key, f"{exc}", fields=exc.fields)
            if isinstance(exc, ConnectionFailed):
                await asyncio.sleep(0.2)  # a server that is down: count, do not spin
            return
        except Exception as exc:  # a bug in the client or here: count it, show it once
            code = f"exception:{type(exc).__name__}"
            if (op, code) not in self._said:
                self.say(traceback.format_exc().rstrip())
            self._error(op, key, code, repr(exc), fatal=True)
            return
        stats.latencies.append(time.perf_counter() - started)
        stats.bytes += nbytes
        self.stats.done += 1

    def _error(self, op: str, key: str, code: str, message: str, *, fatal: bool) -> None:
        self.stats.ops[op].errors[code] += 1
        self.stats.done += 1
        sample = {"op": op, "key": key, "code": code, "message": message, "fatal": fatal}
        sample["t"] = round(time.monotonic() - self.t0, 3)
        if len(self.stats.error_samples) < 100:
            self.stats.error_samples.append(sample)
        if (op, code) not in self._said:
            self._said.add((op, code))
            self.say(f"loadtest: {op} {key}: {message} (first {code} on {op})")

    def _corruption(self, op: str, key: str, detail: str, **extra: Any) -> None:
        record = {"op": op, "key": key, "detail": detail, **extra}
        self.stats.corruptions.append(record)
        self.say(f"*** CORRUPTION *** {op} {key}: {detail}")

    def _anomaly(self, op: str, key: str, detail: str) -> None:
        self.stats.anomalies.append({"op": op, "key": key, "detail": detail})
        self.say(f"*** ANOMALY *** {op} {key}: {detail}")

    async def _put(self, client: AsyncClient, key: str, rng: random.Random) -> int:
        state = self.states[key]
        choice = rng.choices(self.s.sizes, [c.weight for c in self.s.sizes])[0]
        size = choice.low if choice.low == choice.high else rng.randint(choice.low, choice.high)
        payload = Payload(self.pool, self.s.seed, key, state.versions, size)
        state.versions += 1
        mutation = state.begin(payload)
        outcome: Outcome = "maybe"
        try:
            info = await client.put(
                key, payload, size=size, ttl=self.ttl, progress=LiveBytes(self.stats)
            )
            outcome = "done"
        except BaseException as exc:
            outcome = "maybe" if _ambiguous(exc) else "refused"
            raise
        finally:
            state.end(mutation, outcome)
        if info.get("sha1") != payload.digest or info.get("size") != size:
            self._corruption(
                "put",
                key,
                f"server stored sha1 {info.get('sha1')} ({info.get('size')} bytes), "
                f"sent {payload.digest} ({size} bytes)",
            )
        return size

    async def _get(self, client: AsyncClient, key: str) -> int:
        state = self.states[key]
        window = state.watch()
        sink = HashSink()
        got: Value
        try:
            try:
                await client.get(key, sink, progress=LiveBytes(self.stats))
                got = sink.hexdigest()
            except NotFound:
                got = None
        finally:
            state.unwatch(window)
        acceptable = window.acceptable()
        if got not in acceptable:
            what = f"sha1 {got} ({sink.size} bytes)" if got else "not_found"
            self._corruption("get", key, f"got {what}, expected {_show(acceptable)}")
        elif got is None:
            self.stats.ops["get"].not_found += 1
        return sink.size if got else 0

    async def _stat(self, client: AsyncClient, key: str) -> int:
        state = self.states[key]
        window = state.watch()
        got: Value
        try:
            info = await client.stat(key)
            sha1 = info.get("sha1")
            got = sha1 if isinstance(sha1, str) else f"<{sha1!r}>"
        except NotFound:
            got = None
        finally:
            state.unwatch(window)
        acceptable = window.acceptable()
        if got not in acceptable:
            self._anomaly("stat", key, f"sha1 {got or 'not_found'}, expected {_show(acceptable)}")
        elif got is None:
            self.stats.ops["stat"].not_found += 1
        return 0

    async def _delete(self, client: AsyncClient, key: str) -> int:
        state = self.states[key]
        mutation = state.begin(None)
        window = state.watch(exclude=mutation)
        outcome: Outcome = "maybe"
        try:
            deleted = await client.delete(key)
            outcome = "done"
        except BaseException as exc:
            outcome = "maybe" if _ambiguous(exc) else "refused"
            raise
        finally:
            state.unwatch(window)
            state.end(mutation, outcome)
        acceptable = window.acceptable()
        if deleted and acceptable == {None}:
            self._anomaly("delete", key, "deleted: true for a key that held nothing")
        elif not deleted and None not in acceptable:
            self._anomaly("delete", key, f"deleted: false, expected {_show(acceptable)}")
        if not deleted:
            self.stats.ops["delete"].not_found += 1
        return 0

    async def _list(self, client: AsyncClient) -> int:
        windows = {key: state.watch() for key, state in self.states.items()}
        listed: dict[str, Value] = {}
        try:
            async for info in client.list(self.s.prefix, limit=1000):
                sha1 = info.get("sha1")
                listed[str(info.get("key"))] = sha1 if isinstance(sha1, str) else f"<{sha1!r}>"
        finally:
            for key, window in windows.items():
                self.states[key].unwatch(window)
        for key, window in windows.items():
            acceptable = window.acceptable()
            got = listed.pop(key, None)
            if got not in acceptable:
                self._anomaly(
                    "list", key, f"listed {got or 'absent'}, expected {_show(acceptable)}"
                )
        for key in listed:
            self._anomaly("list", key, "listed, but this run never used that key")
        return 0

    # -- the end

    async def _cleanup(self) -> None:
        """Delete every key this run may have created, then anything left under the prefix."""
        todo: asyncio.Queue[str] = asyncio.Queue()
        for key, state in self.states.items():
            if state.versions:
                todo.put_nowait(key)
        deleted = 0

        async def deleter(index: int) -> None:
            nonlocal deleted
            async with self.client(f"cleanup-{index}", retries=3) as client:
                while not todo.empty():
                    key = todo.get_nowait()
                    try:
                        gone = await client.delete(key)
                        deleted += gone  # after the await: deleters share the count
                    except ValiseError as exc:
                        self._cleanup_error(key, exc)

        for _ in range(2):  # the keys we know, then whatever LIST still shows
            await asyncio.gather(*(deleter(i) for i in range(min(8, self.s.clients))))
            try:
                async with self.client("cleanup-list", retries=3) as client:
                    left = [str(info.get("key")) async for info in client.list(self.s.prefix)]
            except ValiseError as exc:
                self._cleanup_error(self.s.prefix, exc)
                left = []
                self.cleanup = {"deleted": deleted, "remaining": None}
                return
            self.cleanup = {"deleted": deleted, "remaining": len(left)}
            if not left:
                return
            for key in left:
                todo.put_nowait(key)
        self._cleanup_error(self.s.prefix, None, f"{len(left)} keys still listed")

    def _cleanup_error(self, key: str, exc: ValiseError | None, message: str = "") -> None:
        code = exc.code if exc is not None else "left_behind"
        self.stats.cleanup_errors[code] += 1
        shown = sum(self.stats.cleanup_errors.values())
        if shown <= 5:
            self.say(f"loadtest: cleanup {key}: {exc or message}")
        elif shown == 6:
            self.say("loadtest: cleanup: more errors (counted in the summary)")


# -- report -----------------------------------------------------------------------


def _peak_rss_mib() -> float | None:
    """This process's peak resident memory (Unix only; KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024**2 if sys.platform == "darwin" else 1024), 1)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def report(test: LoadTest, server_log: dict[str, Any] | None) -> dict[str, Any]:
    s, stats = test.s, test.stats
    elapsed = max(test.elapsed, 1e-9)
    ops: dict[str, Any] = {}
    for op, st in stats.ops.items():
        ordered = sorted(st.latencies)
        ops[op] = {
            "ok": len(ordered),
            "not_found": st.not_found,
            "errors": sum(st.errors.values()),
            "errors_by_code": dict(st.errors),
            "bytes": st.bytes,
            "ops_per_s": round(len(ordered) / elapsed, 2),
            "mb_per_s": round(st.bytes / elapsed / 1e6, 3),
            "latency_ms": {
                "p50": _ms(percentile(ordered, 50)),
                "p95": _ms(percentile(ordered, 95)),
                "p99": _ms(percentile(ordered, 99)),
                "max": _ms(ordered[-1] if ordered else None),
            },
        }
    total_ok = sum(o["ok"] for o in ops.values())
    total_bytes = sum(o["bytes"] for o in ops.values())
    failed = bool(stats.corruptions or stats.anomalies or stats.error_count)
    result: dict[str, Any] = {
        "server": f"{s.host}:{s.port}",
        "server_info": test.server_info,
        "prefix": s.prefix,
        "seed": s.seed,
        "clients": s.clients,
        "keys": s.keys,
        "sizes": s.sizes_spec,
        "mix": {op: w for op, w in s.mix.items() if w > 0},
        "duration_s": s.duration,
        "count": s.count,
        "elapsed_s": round(test.elapsed, 3),
        "interrupted": test.interrupted,
        "ops": ops,
        "total": {
            "ok": total_ok,
            "errors": stats.error_count,
            "bytes": total_bytes,
            "ops_per_s": round(total_ok / elapsed, 2),
            "mb_per_s": round(total_bytes / elapsed / 1e6, 3),
        },
        "errors_by_code": dict(stats.errors_by_code()),
        "error_samples": stats.error_samples,
        "corruptions": len(stats.corruptions),
        "corruption_details": stats.corruptions[:100],
        "anomalies": len(stats.anomalies),
        "anomaly_details": stats.anomalies[:100],
        "cleanup": test.cleanup,
        "client_peak_rss_mib": _peak_rss_mib(),
        "exit_code": EXIT_FAILED if failed else (EXIT_INTERRUPTED if test.interrupted else EXIT_OK),
    }
    if server_log is not None:
        result["server_log"] = server_log
    return result


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_table(result: dict[str, Any], out: IO[str]) -> None:
    info = result["server_info"]
    print(
        f"valise load test: {result['clients']} clients, {result['elapsed_s']:.1f} s, "
        f"server {result['server']} ({info.get('server', '?')}, chunk "
        f"{human_bytes(info.get('chunk_size', 0))}, max_frame "
        f"{human_bytes(info.get('max_frame', 0))})",
        file=out,
    )
    mix = ",".join(f"{op}={w:g}" for op, w in result["mix"].items())
    print(
        f"prefix {result['prefix']}  seed {result['seed']}  keys {result['keys']}  "
        f"sizes {result['sizes']}  mix {mix}",
        file=out,
    )
    head = f"{'op':<7}{'ok':>9}{'errors':>8}{'ops/s':>10}{'MB/s':>10}"
    head += f"{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"
    print(head, file=out)
    for op, o in result["ops"].items():
        lat = o["latency_ms"]
        print(
            f"{op:<7}{o['ok']:>9}{o['errors']:>8}{o['ops_per_s']:>10.1f}{o['mb_per_s']:>10.1f}"
            + "".join(_cell(lat[p], ">10.1f") for p in ("p50", "p95", "p99", "max")),
            file=out,
        )
    t = result["total"]
    print(
        f"{'total':<7}{t['ok']:>9}{t['errors']:>8}{t['ops_per_s']:>10.1f}{t['mb_per_s']:>10.1f}",
        file=out,
    )
    nf = ", ".join(f"{op} {o['not_found']}" for op, o in result["ops"].items() if o["not_found"])
    if nf:
        print(f"not found (expected, key absent): {nf}", file=out)
    codes = result["errors_by_code"]
    shown = ", ".join(f"{code} {n}" for code, n in sorted(codes.items())) or "none"
    print(f"errors by code: {shown}", file=out)
    print(f"corruptions: {result['corruptions']}   anomalies: {result['anomalies']}", file=out)
    c = result["cleanup"]
    left = "unknown" if c["remaining"] is None else c["remaining"]
    print(f"cleanup: deleted {c['deleted']} keys, {left} left under the prefix", file=out)
    if result["client_peak_rss_mib"] is not None:
        print(f"load test process peak RSS: {result['client_peak_rss_mib']:.0f} MiB", file=out)
    log = result.get("server_log")
    if log is not None:
        print(f"server log: {log['problems']} warning/error records", file=out)
        for line in log["lines"][:40]:
            print(f"  {line}", file=out)
    verdict = {EXIT_OK: "PASS", EXIT_INTERRUPTED: "INTERRUPTED"}.get(result["exit_code"], "FAIL")
    print(verdict, file=out)


# -- --spawn: a fresh local server ------------------------------------------------

_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]")


class SpawnedServer:
    """``python server.py --port 0`` from the repository root, with its private Valkey."""

    def __init__(self, extra_args: Sequence[str]) -> None:
        self.root = Path(__file__).resolve().parents[2]
        self.args = [sys.executable, "server.py", "--port", "0", *extra_args]
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._tail: collections.deque[str] = collections.deque(maxlen=30)
        self.problems: list[str] = []
        self.problem_count = 0
        self._in_problem = False
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 60.0) -> tuple[str, int]:
        if not (self.root / "server.py").is_file():
            raise UsageError(f"--spawn: no server.py in {self.root}")
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # our Ctrl-C is ours to handle: we stop it last
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, sink in ((self.proc.stdout, self._stdout), (self.proc.stderr, self._stderr)):
            thread = threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                tail = "\n".join(self._tail)
                code = self.proc.returncode
                raise SpawnError(f"the spawned server did not start (exit {code}):\n{tail}")
            if line.startswith("valise listening on "):
                # "valise listening on HOST:PORT", maybe followed by " (N workers)".
                host, port = parse_server(line.split()[3])
                return ("127.0.0.1" if host in ("0.0.0.0", "") else host, port)

    @staticmethod
    def _drain(stream: IO[str], sink: Any) -> None:
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    def _stdout(self, line: str | None) -> None:
        self._lines.put(line)

    def _stderr(self, line: str | None) -> None:
        if line is None:
            return
        self._tail.append(line)
        if _LOG_LINE.match(line):
            self._in_problem = bool(_PROBLEM.search(line))
            if self._in_problem:
                self.problem_count += 1
        elif line.startswith("Traceback") and not self._in_problem:
            self._in_problem = True  # an uncaught exception, outside logging
            self.problem_count += 1
        elif not self._in_problem:
            return  # continuation of an INFO record
        if self._in_problem and len(self.problems) < 200:
            self.problems.append(line)  # a WARNING/ERROR record with its traceback

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait (the server finishes transfers within its grace), then SIGKILL."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=2)
        return proc.returncode

    def log(self) -> dict[str, Any]:
        code = self.proc.returncode if self.proc is not None else None
        return {"problems": self.problem_count, "lines": self.problems, "exit_code": code}


# -- command line -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m client.loadtest",
        description="Load a Valise server with a verified mix of operations.",
        epilog="exit codes: 0 clean, 1 corruption/anomaly/error, 2 usage, 130 interrupted",
    )
    p.add_argument(
        "--server",
        help=f"host:port (env VALISE_SERVER, default 127.0.0.1:{DEFAULT_PORT}); not with --spawn",
    )
    p.add_argument("--spawn", action="store_true", help="start a fresh local server.py and use it")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra server.py argument with --spawn (repeatable, e.g. --server-arg=--grace=5)",
    )
    p.add_argument("--clients", type=int, default=16, help="concurrent connections (16)")
    p.add_argument(
        "--duration", type=float, help=f"seconds (default {DEFAULT_DURATION:g} without --count)"
    )
    p.add_argument("--count", type=int, help="total operations cap")
    p.add_argument("--sizes", default=DEFAULT_SIZES, help=f"size:weight,... ({DEFAULT_SIZES})")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"op=weight,... ({DEFAULT_MIX})")
    p.add_argument("--prefix", help="key prefix (default loadtest/RUNID/); must be unused")
    p.add_argument("--keys", type=int, help="keys in the shared pool (default 4 per client)")
    p.add_argument("--json", metavar="FILE", help='write the summary as JSON ("-": stdout)')
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line, no table")
    p.add_argument("--seed", type=int, help="payload and operation seed (default: random)")
    p.add_argument("--timeout", type=float, default=30.0, help="client I/O timeout, s (30)")
    p.add_argument(
        "--retries", type=int, default=0, help="client retries per call (0: count every error)"
    )
    return p


def settings_from(args: argparse.Namespace, host: str, port: int) -> Settings:
    if args.clients < 1:
        raise UsageError("--clients must be >= 1")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be > 0")
    duration = args.duration
    if duration is None and args.count is None:
        duration = DEFAULT_DURATION
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    prefix = args.prefix if args.prefix is not None else f"loadtest/{run_id}/"
    if not prefix or len(prefix.encode()) > 1000:
        raise UsageError("--prefix must be 1 to 1000 bytes")
    keys = args.keys if args.keys is not None else max(16, 4 * args.clients)
    if keys < 1:
        raise UsageError("--keys must be >= 1")
    return Settings(
        host=host,
        port=port,
        clients=args.clients,
        duration=duration,
        count=args.count,
        sizes=parse_sizes(args.sizes),
        sizes_spec=args.sizes,
        mix=parse_mix(args.mix),
        prefix=prefix,
        keys=keys,
        seed=seed,
        timeout=args.timeout,
        retries=max(0, args.retries),
        progress=sys.stderr.isatty() and not args.quiet,
        quiet=args.quiet,
    )


async def _amain(test: LoadTest) -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()

    def interrupt() -> None:
        if not test.stopping:
            test.stopping = test.interrupted = True
            test.say("loadtest: interrupted: finishing operations in flight (Ctrl-C again: abort)")
        elif main_task is not None:
            main_task.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        await test.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spawned: SpawnedServer | None = None
    try:
        try:
            if args.spawn and args.server is not None:
                raise UsageError("--spawn starts its own server: drop --server")
            if args.server_arg and not args.spawn:
                raise UsageError("--server-arg needs --spawn")
            default = os.environ.get("VALISE_SERVER", f"127.0.0.1:{DEFAULT_PORT}")
            host, port = parse_server(args.server or default)
            settings = settings_from(args, host, port)
        except (UsageError, ValueError) as exc:
            parser.error(str(exc))
        if args.spawn:
            spawned = SpawnedServer(args.server_arg)
            host, port = spawned.start()
            settings = dataclasses.replace(settings, host=host, port=port)
        test = LoadTest(settings)
        try:
            asyncio.run(_amain(test))
        except (KeyboardInterrupt, asyncio.CancelledError):
            test.interrupted = True
            test.say("loadtest: aborted")
        except ValiseError as exc:
            print(f"loadtest: cannot use {host}:{port}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except UsageError as exc:
            print(f"loadtest: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if spawned is not None:
            spawned.stop()
        result = report(test, spawned.log() if spawned is not None else None)
        if args.json == "-":
            print(json.dumps(result, indent=2))
        elif args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=2)
                fh.write("\n")
        if not args.quiet:
            print_table(result, sys.stderr if args.json == "-" else sys.stdout)
        elif result["exit_code"] == EXIT_FAILED:
            print(
                f"loadtest: FAIL: {result['corruptions']} corruptions, {result['anomalies']} "
                f"anomalies, errors {result['errors_by_code'] or 'none'}",
                file=sys.stderr,
            )
        return int(result["exit_code"])
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SpawnError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if spawned is not None:
            spawned.stop()
