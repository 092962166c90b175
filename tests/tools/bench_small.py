"""Small files in the bench: Valise's 4 KiB PUT+GET pairs beside raw valkey-py's (issue 21).

Issue 21 asks that a small request cost what it must: Valise at 0.5 x or
more of what valkey-py asyncio itself does with the same 4 KiB values on the
same number of connections, with the access log on at its default level.
So each round measures both in turn (alternating which goes first, as the
big transfers' ceiling does) and reports, per PUT+GET pair, the CPU of the
server, of valkey-server and of the benchmark client: the three share the
machine's cores, and a pair costs their sum whichever side pays it.

The raw side is ``--small-connections`` tasks on one valkey-py client (the
pool of storage/clients.py, through :func:`tests.tools.bench.raw_client`),
each doing SET (with the bench's TTL) then GET of its own key and checking
the bytes, until the deadline; its keys are unlinked after the clock stops.

``--server-python`` runs the server under another interpreter;
:func:`check_python` refuses one that cannot import the server's
dependencies and says how to give it them.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.tools.bench import CpuMeter, Payload, Settings, ValiseProcess

#: What the server imports from outside the repository (requirements.txt).
SERVER_IMPORTS = ("valkey", "libvalkey", "h11", "uvloop", "prometheus_client", "cryptography")

#: Valise's pairs/s over raw valkey-py's: issue 21's target.
TARGET_RATIO = 0.5

#: A round's figures and their names in the results (``small_...``, ``raw_small_...``).
FIGURES = (
    ("pairs_per_s", "pairs_per_s"),
    ("p50_ms", "p50_ms"),
    ("p99_ms", "p99_ms"),
    ("server_ms", "server_ms_per_pair"),
    ("valkey_ms", "valkey_ms_per_pair"),
    ("client_ms", "client_ms_per_pair"),
)


def per_pair_ms(used: dict[str, float], pairs: float) -> dict[str, float]:
    """CPU milliseconds per pair of each party from a :class:`CpuMeter`'s seconds.

    ``valkey``, ``valkey1``, ... (a cluster's nodes) add up to one valkey-server
    figure; ``server`` is there only when a Valise server was metered.
    """
    n = max(pairs, 1.0)
    out = {
        "valkey_ms": sum(v for k, v in used.items() if k.startswith("valkey")) * 1000 / n,
        "client_ms": used.get("client", 0.0) * 1000 / n,
    }
    if "server" in used:
        out["server_ms"] = used["server"] * 1000 / n
    return out


async def raw_small(
    client: Any, payload: Payload, seconds: float, connections: int
) -> dict[str, float]:
    """``connections`` tasks doing SET then GET of the 4 KiB value until the deadline."""
    from tests.tools.bench import TTL, BenchError, pair_rates

    latencies: list[float] = []
    names: list[str] = []
    run = uuid.uuid4().hex[:8]
    deadline = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            key = f"bench:rawsmall:{run}:{n}:{i}"
            started = time.perf_counter()
            await client.set(key, payload.small, px=TTL * 1000)
            value = await client.get(key)
            latencies.append(time.perf_counter() - started)
            if value != payload.small:
                raise BenchError(f"raw GET of {key} returned other bytes")
            names.append(key)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(connections)))
    elapsed = time.perf_counter() - started
    for at in range(0, len(names), 512):
        await client.unlink(*names[at : at + 512])
    return pair_rates(latencies, elapsed)


async def metered(
    meter: CpuMeter,
    measure: Callable[[], Awaitable[dict[str, float]]],
    into: dict[str, list[float]],
) -> dict[str, float]:
    """One measurement under ``meter``; its figures and CPU per pair appended to ``into``."""
    with meter:
        got = await measure()
    got.update(per_pair_ms(meter.used, got["pairs"]))
    for name, value in got.items():
        into.setdefault(name, []).append(value)
    return got


async def phase(
    server: ValiseProcess, raw: Any, payload: Payload, s: Settings, pids: dict[str, int]
) -> dict[str, Any]:
    """``s.repeat`` rounds of Valise's small files and raw valkey-py's, alternating
    which goes first; the bench's ``small_*`` figures and the ``raw_small_*`` ones."""
    from tests.tools.bench import CpuMeter, small_files, summary

    valkey_only = {k: v for k, v in pids.items() if k != "server"}
    ours: dict[str, list[float]] = {}
    theirs: dict[str, list[float]] = {}
    cpu: list[dict[str, float]] = []
    for rep in range(s.repeat):
        sides = ("valise", "raw") if rep % 2 == 0 else ("raw", "valise")
        for side in sides:
            print(f"small files, {side}, run {rep + 1}/{s.repeat} ...", flush=True)
            if side == "valise":
                meter = CpuMeter(pids)
                await metered(meter, partial(small_files, server, payload, s), ours)
                cpu.append(meter.used)
            else:
                measure = partial(raw_small, raw, payload, s.small_seconds, s.small_connections)
                await metered(CpuMeter(valkey_only), measure, theirs)
    ratios = [a / b for a, b in zip(ours["pairs_per_s"], theirs["pairs_per_s"], strict=True) if b]
    found: dict[str, Any] = {"small_cpu_seconds": cpu, "small_x_raw": summary(ratios)}
    for prefix, runs in (("small", ours), ("raw_small", theirs)):
        for name, label in FIGURES:
            if name in runs:
                found[f"{prefix}_{label}"] = summary(runs[name])
    return found


def report(e: dict[str, Any], s: Settings, fmt: Callable[..., str]) -> None:
    """Valise's small files, the raw ceiling beside them, and both CPU splits."""
    from tests.tools.bench import MIB

    print(
        f"small files (4 KiB, {s.small_connections} connections, {s.small_seconds:g} s, "
        f"chunk {s.default_chunk // MIB} MiB): {fmt(e['small_pairs_per_s'])} PUT+GET pairs/s, "
        f"p50 {fmt(e['small_p50_ms'], 1)} ms, p99 {fmt(e['small_p99_ms'], 1)} ms"
    )
    if "raw_small_pairs_per_s" not in e:
        return
    print(
        f"raw valkey-py small ceiling (SET then GET of the same 4 KiB, {s.small_connections} "
        f"connections): {fmt(e['raw_small_pairs_per_s'])} pairs/s, "
        f"p50 {fmt(e['raw_small_p50_ms'], 1)} ms, p99 {fmt(e['raw_small_p99_ms'], 1)} ms; "
        f"Valise {fmt(e['small_x_raw'], 2)} x raw (target >= {TARGET_RATIO})"
    )
    print(
        f"CPU ms per small pair: Valise server {fmt(e['small_server_ms_per_pair'], 3)}, "
        f"valkey-server {fmt(e['small_valkey_ms_per_pair'], 3)}, "
        f"client {fmt(e['small_client_ms_per_pair'], 3)}; raw: "
        f"valkey-server {fmt(e['raw_small_valkey_ms_per_pair'], 3)}, "
        f"client {fmt(e['raw_small_client_ms_per_pair'], 3)}"
    )


def check_python(path: str, flag: str = "--server-python") -> str:
    """``path``'s version when it runs the server's imports; else a SystemExit saying how."""
    probe = f"import sys; import {', '.join(SERVER_IMPORTS)}; print(sys.version.split()[0])"
    try:
        done = subprocess.run(
            [path, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        raise SystemExit(f"{flag} {path}: cannot run it: {exc}") from exc
    version = done.stdout.strip()
    if done.returncode != 0 or not version:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(
            f"{flag} {path}: it cannot import the server's dependencies ({last}). "
            f"Give it a venv of its own: PY -m venv DIR && DIR/bin/pip install -r "
            f"requirements.txt, then pass DIR/bin/python"
        )
    if tuple(int(p) for p in version.split(".")[:2]) < (3, 11):
        raise SystemExit(f"{flag} {path}: Python {version}; the server needs 3.11+")
    return version
