"""The bench's A/B mode: this checkout's server against another git revision's.

`python -m tests.tools.bench --compare REF` (`make bench ARGS="--compare main"`).
Numbers taken minutes apart on a shared machine differ by 2x for the same
code; two servers measured in turn within one run share the machine's
drift. So both servers run at once (each idle while the other is measured)
and every round measures both, alternating which goes first; each figure
is printed side by side with the ratio taken round by round.

REF's tree comes from ``git archive REF`` unpacked under the repository's
ignored ``build/`` directory (no worktree: the repository's worktree list
is left alone), run by the same Python and the same Valkey, and removed at
the end. The workload is the small-file one (4 KiB PUT then GET on
``--small-connections`` connections) and, unless ``--small-only``, one
upload and one download of ``--size`` bytes. Server CPU per small pair is
the figure to compare by: it moves far less with the machine's load than
pairs/s does. Each round also runs raw valkey-py's SET then GET of the same
4 KiB values (tests/tools/bench_small.py), so both sides' small pairs/s
are given as a fraction of that ceiling too.

Two interpreters on the same code: ``--compare HEAD --ref-python PATH``
runs REF (this commit) under PATH and this checkout under the bench's own
Python (or ``--server-python``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.tools import bench, bench_small

#: Where REF's tree is unpacked: ignored by git (.gitignore has build/).
BUILD = bench.REPO / "build"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=bench.REPO, capture_output=True, text=True, check=False
    ).stdout.strip()


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[tuple[Path, str]]:
    """REF's tree in a directory of its own under build/, and its commit; removed after."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not commit:
        raise bench.BenchError(f"--compare {ref}: not a revision of this repository")
    target = BUILD / f"compare-{commit[:12]}-{uuid.uuid4().hex[:6]}"
    target.mkdir(parents=True)
    try:
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar", commit],
            cwd=bench.REPO,
            stdout=subprocess.PIPE,
        )
        assert archive.stdout is not None
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(target, filter="data")
        if archive.wait() != 0:
            raise bench.BenchError(f"git archive {commit} failed")
        yield target, commit
    finally:
        shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(OSError):
            BUILD.rmdir()  # only when nothing else is in it


def ref_target(this: bench.Target, python: str | None, server_args: str | None) -> bench.Target:
    """REF's server: this side's target, but under ``--ref-python`` and with
    ``--ref-server-args`` when given (``None``: the same as this side's)."""
    python = python or this.python
    version = bench_small.check_python(python, "--ref-python") if python else None
    args = this.server_args if server_args is None else shlex.split(server_args)
    return dataclasses.replace(this, python=python, python_version=version, server_args=args)


def _paired(ours: list[float], theirs: list[float]) -> dict[str, Any]:
    return bench.summary([a / b for a, b in zip(ours, theirs, strict=True) if b])


async def _small_round(
    server: bench.ValiseProcess, payload: bench.Payload, s: bench.Settings, pids: dict[str, int]
) -> dict[str, float]:
    with bench.CpuMeter({**pids, "server": server.pid}) as cpu:
        got = await bench.small_files(server, payload, s)
    got.update(bench_small.per_pair_ms(cpu.used, got["pairs"]))
    return got


async def _big_round(
    server: bench.ValiseProcess, payload: bench.Payload, s: bench.Settings, pids: dict[str, int]
) -> dict[str, float]:
    meters = [bench.CpuMeter({**pids, "server": server.pid}) for _ in range(2)]
    with bench.PeakRss(server.pid) as peak:
        up, down = await bench.valise_up_down(server, payload, s.size, None, meters)
    return {
        "upload_mbps": s.size / bench.MB / up,
        "download_mbps": s.size / bench.MB / down,
        "rss_mib": peak.mib,
        "upload_server_s": meters[0].used["server"],
        "download_server_s": meters[1].used["server"],
    }


async def run(
    vk: Any,
    s: bench.Settings,
    workdir: Path,
    ref: str,
    small_only: bool,
    ref_target: bench.Target,
) -> dict[str, Any]:
    """Both servers, ``s.repeat`` interleaved rounds; the figures of each side per round,
    and raw valkey-py's small pairs (``raw``) once per round."""
    if small_only:
        s.size = s.concurrent_size = 4096
    print(f"generating {s.size / bench.MB:.0f} MB of random data ...", flush=True)
    payload = bench.make_payload(s)
    pids = bench.valkey_pids(vk)
    sides = ("this", ref)
    rounds: dict[str, list[dict[str, float]]] = {side: [] for side in (*sides, "raw")}
    raw = bench.raw_client(vk.url, s.target.cluster)
    if s.target.cluster:
        await raw.initialize()
    with contextlib.ExitStack() as stack:
        tree, commit = stack.enter_context(checkout(ref))
        servers = {
            "this": stack.enter_context(
                bench.valise_server(vk.url, s.default_chunk, workdir, target=s.target)
            ),
            ref: stack.enter_context(
                bench.valise_server(vk.url, s.default_chunk, workdir, target=ref_target, cwd=tree)
            ),
        }
        # A second of small files each first: imports, connections and caches warm.
        warm = dataclasses.replace(s, small_seconds=1.0)
        for side in sides:
            await bench.small_files(servers[side], payload, warm)
        for rep in range(s.repeat):
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                print(f"round {rep + 1}/{s.repeat}: {side} ...", flush=True)
                got = await _small_round(servers[side], payload, s, pids)
                if not small_only:
                    got.update(await _big_round(servers[side], payload, s, pids))
                rounds[side].append(got)
            print(f"round {rep + 1}/{s.repeat}: raw valkey-py ...", flush=True)
            with bench.CpuMeter(pids) as cpu:
                got = await bench_small.raw_small(
                    raw, payload, s.small_seconds, s.small_connections
                )
            rounds["raw"].append({**got, **bench_small.per_pair_ms(cpu.used, got["pairs"])})
    await raw.aclose()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "this": f"{_git('rev-parse', '--short=12', 'HEAD')} (with uncommitted changes, if any)",
        "ref": f"{ref} = {commit[:12]}",
        "target": s.target.describe(),
        "ref_target": ref_target.describe(),
        "rounds": rounds,
    }


#: (field, label, digits) printed for each side, and the ratio this / REF.
FIGURES = (
    ("server_ms", "server CPU ms per small PUT+GET pair", 3),
    ("valkey_ms", "valkey-server CPU ms per small pair", 3),
    ("client_ms", "bench client CPU ms per small pair", 3),
    ("pairs_per_s", "small PUT+GET pairs/s", 0),
    ("p50_ms", "small pair p50 ms", 1),
    ("p99_ms", "small pair p99 ms", 1),
    ("upload_mbps", "upload MB/s", 0),
    ("download_mbps", "download MB/s", 0),
    ("upload_server_s", "server CPU s per upload", 2),
    ("download_server_s", "server CPU s per download", 2),
    ("rss_mib", "server peak RSS MiB (up+down)", 0),
)


def print_table(result: dict[str, Any], s: bench.Settings, ref: str) -> None:
    ours, theirs = result["rounds"]["this"], result["rounds"][ref]
    print()
    print(f"A/B {result['date']}: this = {result['this']}, REF = {result['ref']}")
    print(
        f"target: {result['target']}"
        + ("" if result["ref_target"] == result["target"] else f"; REF: {result['ref_target']}")
        + f"; {s.repeat} interleaved round(s), small files "
        f"{s.small_connections} connections x {s.small_seconds:g} s"
        + ("" if "upload_mbps" not in ours[0] else f", big files {s.size / bench.MB:.0f} MB")
        + "; median (min-max), ratio taken round by round"
    )
    head = f"{'figure':<38} | {'this':>22} | {'REF':>22} | {'this / REF':>18}"
    print(head)
    print("-" * len(head))
    for name, label, digits in FIGURES:
        if name not in ours[0]:
            continue
        a = [r[name] for r in ours]
        b = [r[name] for r in theirs]
        print(
            f"{label:<38} | {bench.fmt(bench.summary(a), digits):>22} | "
            f"{bench.fmt(bench.summary(b), digits):>22} | {bench.fmt(_paired(a, b), 2):>18}"
        )
    raw = result["rounds"]["raw"]
    pairs = [r["pairs_per_s"] for r in raw]
    print(
        f"raw valkey-py small ceiling (SET then GET of the same 4 KiB, once a round): "
        f"{bench.fmt(bench.summary(pairs))} pairs/s, "
        f"p99 {bench.fmt(bench.summary([r['p99_ms'] for r in raw]), 1)} ms, CPU ms per pair "
        f"valkey-server {bench.fmt(bench.summary([r['valkey_ms'] for r in raw]), 3)}, "
        f"client {bench.fmt(bench.summary([r['client_ms'] for r in raw]), 3)}; "
        f"this {bench.fmt(_paired([r['pairs_per_s'] for r in ours], pairs), 2)} x raw, "
        f"REF {bench.fmt(_paired([r['pairs_per_s'] for r in theirs], pairs), 2)} x raw "
        f"(target >= {bench_small.TARGET_RATIO})"
    )
