"""Server instructions per small PUT+GET pair, a deterministic A/B (`make bench-instructions`).

`python -m tests.tools.bench_instructions` (`make bench-instructions ARGS=...`).
`make bench ARGS="--compare REF --small-only"` gives server CPU per small
PUT+GET pair, but on a shared 2-core machine the same code swings by 2x
within one run, so a lever of 2-5 % is lost in it. This tool counts instead
the user-space instructions the server executes for a fixed load, under
valgrind's callgrind: the same revision gives the same count to about 1 %.

Each round starts the server under ``valgrind --tool=callgrind
--instr-atstart=no`` (nothing counted while Python starts and imports),
warms it up with a few pairs per connection, turns instrumentation on with
``callgrind_control -i on PID``, runs ``--connections`` x ``--pairs`` small
PUT+GET pairs (4 KiB, bench.Wire's put_small then get), turns it off, stops
the server and reads the total from callgrind's output file. Counted: the
user-space instructions of the server process, all its threads. Not counted:
system calls and kernel time, valkey-server, the client. A proxy for CPU per
pair, not a replacement for it: a change that trades instructions for system
calls or cache misses shows here as a gain it may not be.

``--compare REF`` runs REF's tree (tests/tools/compare.py ``checkout``: git
archive under build/, removed after) beside this checkout's, ``--rounds``
times, alternating which side goes first, against one private valkey-server;
it prints each side's millions of instructions per pair and the ratio this /
REF round by round. The callgrind files and the server logs live in the
run's temporary directory, removed at the end; they hold counts and log
lines, never file bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.embedded import EmbeddedValkey
from tests.tools import bench, compare

#: valgrind starts Python 20-50x slower than usual: bench's 20 s would not do.
START_TIMEOUT = 300.0
#: A clean exit writes callgrind's file; under valgrind that can take a while.
STOP_TIMEOUT = 120.0
#: Pairs per connection before instrumentation: imports, caches and connections warm.
WARMUP_PAIRS = 5
SMALL = 4096


@dataclass(frozen=True)
class Load:
    pairs: int
    connections: int
    server_args: list[str]

    @property
    def total(self) -> int:
        return self.pairs * self.connections


def total_instructions(text: str) -> int:
    """The event total of a callgrind output file: its ``totals:`` line, else ``summary:``.

    Both carry the first event (Ir, instructions) first; a file with neither
    is an error, never a zero that would read as an infinitely fast server.
    """
    found: dict[str, int] = {}
    for line in text.splitlines():
        for name in ("totals:", "summary:"):
            if line.startswith(name):
                fields = line.split()
                if len(fields) < 2 or not fields[1].isdigit():
                    raise bench.BenchError(f"callgrind output: cannot read {line!r}")
                found.setdefault(name, int(fields[1]))
    for name in ("totals:", "summary:"):
        if name in found:
            return found[name]
    raise bench.BenchError("callgrind output has no totals: or summary: line")


def _vgdb_prefix(workdir: Path) -> str:
    """Where valgrind's gdbserver FIFOs live, which callgrind_control talks through: the
    run's directory (valgrind would take the server's TMPDIR, callgrind_control ours)."""
    return f"--vgdb-prefix={workdir / 'vgdb-pipe'}"


def _control(pid: int, workdir: Path, *args: str) -> None:
    """callgrind_control on the server. It exits 0 even when it reached no process, so its
    output is checked too: "Error: Callgrind task with PID ... not detected"."""
    command = ["callgrind_control", _vgdb_prefix(workdir), *args, str(pid)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise bench.BenchError(f"callgrind_control {' '.join(args)}: no answer in 120 s") from exc
    said = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or "error" in said.lower():
        raise bench.BenchError(f"callgrind_control {' '.join(args)} failed: {said}")


@contextlib.contextmanager
def callgrind_server(
    url: str, tree: Path, workdir: Path, load: Load
) -> Iterator[tuple[bench.ValiseProcess, Path]]:
    """``tree``'s server.py under callgrind, instrumentation off; its address and output file."""
    tag = uuid.uuid4().hex[:6]
    out = workdir / f"callgrind-{tag}.out"
    log = workdir / f"server-{tag}.log"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        _vgdb_prefix(workdir),
        f"--callgrind-out-file={out}",
        sys.executable,
        "server.py",
        "--port",
        "0",
        "--valkey-url",
        url,
        "--grace",
        "0",
        "--shutdown-grace",
        "5",
        *load.server_args,
    ]
    # One hash seed for every run: dict and set layouts, hence their probes, stay the same.
    env = {**os.environ, "TMPDIR": str(workdir), "PYTHONHASHSEED": "0"}
    proc = bench.spawn(command, tree, log, env)
    try:
        host, port, http = bench._listening(proc, log, timeout=START_TIMEOUT)
        yield bench.ValiseProcess(proc, host, port, log, http=http), out
    finally:
        # SIGTERM, then time for valgrind to write its file; SIGKILL only if stuck.
        bench._end(proc, STOP_TIMEOUT)


async def _pairs(
    server: bench.ValiseProcess, wires: list[bench.Wire], count: int, tag: str
) -> None:
    small = os.urandom(SMALL)
    sha1 = hashlib.sha1(small, usedforsecurity=False).digest()

    async def worker(n: int, wire: bench.Wire) -> None:
        for i in range(count):
            key = f"instr/{tag}/{n}/{i}"
            await wire.put_small(key, small, sha1)
            _, digest = await wire.get(key)
            if digest != sha1:
                raise bench.BenchError(f"small file {key} came back different")

    await asyncio.gather(*(worker(n, w) for n, w in enumerate(wires)))


async def measure(url: str, tree: Path, workdir: Path, load: Load) -> float:
    """One fresh server, one counted load: millions of instructions per pair."""
    with callgrind_server(url, tree, workdir, load) as (server, out):
        wires: list[bench.Wire] = []
        try:
            for _ in range(load.connections):
                wires.append(await server.wire())
            run = uuid.uuid4().hex[:8]
            await _pairs(server, wires, WARMUP_PAIRS, f"{run}/warm")
            _control(server.pid, workdir, "-i", "on")
            await _pairs(server, wires, load.pairs, f"{run}/count")
            _control(server.pid, workdir, "-i", "off")
        finally:
            for wire in wires:
                wire.close()
    # The file is written when the server exits (the context above stopped it).
    if not out.exists():
        tail = server.log.read_text(errors="replace")[-2000:]
        raise bench.BenchError(f"callgrind wrote no output file; the server's log:\n{tail}")
    total = total_instructions(out.read_text(errors="replace"))
    out.unlink()
    return total / load.total / 1e6


async def run(
    url: str, workdir: Path, load: Load, rounds: int, ref: str | None
) -> dict[str, list[float]]:
    """Per side, its figure of each round; sides alternate which goes first."""
    with contextlib.ExitStack() as stack:
        trees = {"this": bench.REPO}
        if ref is not None:
            trees[ref] = stack.enter_context(compare.checkout(ref))[0]
        sides = list(trees)
        results: dict[str, list[float]] = {side: [] for side in sides}
        for rep in range(rounds):
            for side in sides if rep % 2 == 0 else sides[::-1]:
                started = time.perf_counter()
                figure = await measure(url, trees[side], workdir, load)
                results[side].append(figure)
                print(
                    f"round {rep + 1}/{rounds}: {side}: {figure:.3f} M instructions per pair "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    return results


def report(results: dict[str, list[float]], load: Load, ref: str | None) -> None:
    this = results["this"]
    head = compare._git("rev-parse", "--short=12", "HEAD") if ref else ""
    print()
    print(
        f"M instructions per small PUT+GET pair in the server (callgrind, user space), "
        f"{load.connections} connections x {load.pairs} pairs, {len(this)} round(s); "
        "median (min-max)"
    )
    print(f"this ({head or 'this checkout'}): {bench.fmt(bench.summary(this), 3)}")
    if ref is None:
        return
    theirs = results[ref]
    ratios = [a / b for a, b in zip(this, theirs, strict=True)]
    print(f"REF ({ref}): {bench.fmt(bench.summary(theirs), 3)}")
    print(f"this / REF, round by round: {bench.fmt(bench.summary(ratios), 3)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.tools.bench_instructions", description=__doc__.split("\n")[0]
    )
    p.add_argument("--compare", metavar="REF", help="this checkout's server against REF's")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each side once (default 2)")
    p.add_argument("--pairs", type=int, default=100, help="counted pairs per connection (100)")
    p.add_argument("--connections", type=int, default=8, help="connections at once (default 8)")
    p.add_argument("--server-args", default="", help="more server flags, e.g. '--loop uvloop'")
    ns = p.parse_args(argv)
    for name in ("rounds", "pairs", "connections"):
        if getattr(ns, name) < 1:
            p.error(f"--{name} must be at least 1")
    if "--workers" in ns.server_args:
        # Forked workers are other processes: callgrind_control would count none of them.
        p.error("--workers is not supported: only the process started is counted")
    return ns


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        print(
            f"{missing[0]} not found on PATH: install valgrind (Debian: apt-get install valgrind)",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    load = Load(ns.pairs, ns.connections, shlex.split(ns.server_args))
    workdir = Path(tempfile.mkdtemp(prefix="valise-instr-"))
    vk = EmbeddedValkey()
    try:
        vk.start()
        results = asyncio.run(run(vk.url, workdir, load, ns.rounds, ns.compare))
        report(results, load, ns.compare)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except bench.BenchError as exc:
        print(f"bench-instructions failed: {exc}", file=sys.stderr)
        return 1
    finally:
        vk.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
