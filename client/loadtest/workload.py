"""The run: N clients drawing operations from the mix, each reply checked.

:class:`LoadTest` owns the keys, their :class:`~.model.KeyState` and the
:class:`~.stats.Stats`; each operation checks what it read against what the
run may have stored, then the cleanup deletes everything under the prefix.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from ..aio import AsyncClient
from ..errors import ConnectionFailed, IntegrityError, NotFound, ValiseError
from ..progress import StatusLine, human_bytes
from .model import KeyState, Outcome, ambiguous, show_values
from .payload import HashSink, Payload, make_pool
from .settings import OPS, Settings, UsageError
from .stats import LiveBytes, Stats

if TYPE_CHECKING:
    from .model import Value


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
        self._line = StatusLine(sys.stderr)
        self._said: set[tuple[str, str]] = set()

    # -- output while running

    def say(self, message: str) -> None:
        """A line on stderr that does not collide with the progress line."""
        self._line.clear()
        print(message, file=sys.stderr, flush=True)

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
            self._line.show(line)
            last_done, last_bytes, last_t = done, nbytes, now

    # -- the load

    def client(self, name: str, retries: int | None = None) -> AsyncClient:
        return AsyncClient(
            self.s.host,
            self.s.port,
            timeout=self.s.timeout,
            retries=self.s.retries if retries is None else retries,
            client_name=f"valise-loadtest/{name}",
            token=self.s.token,
            ssl=self.s.ssl,
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
            self._line.clear()
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
            outcome = "maybe" if ambiguous(exc) else "refused"
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
            self._corruption("get", key, f"got {what}, expected {show_values(acceptable)}")
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
            self._anomaly(
                "stat", key, f"sha1 {got or 'not_found'}, expected {show_values(acceptable)}"
            )
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
            outcome = "maybe" if ambiguous(exc) else "refused"
            raise
        finally:
            state.unwatch(window)
            state.end(mutation, outcome)
        acceptable = window.acceptable()
        if deleted and acceptable == {None}:
            self._anomaly("delete", key, "deleted: true for a key that held nothing")
        elif not deleted and None not in acceptable:
            self._anomaly("delete", key, f"deleted: false, expected {show_values(acceptable)}")
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
                    "list", key, f"listed {got or 'absent'}, expected {show_values(acceptable)}"
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
