"""The summary of a run: one JSON-ready dict, and the table printed from it."""

from __future__ import annotations

import sys
from typing import IO, Any

from ..progress import human_bytes
from .settings import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from .stats import percentile
from .workload import LoadTest


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
        "tls": s.ssl is not None,
        "token": s.token is not None,  # whether one was given; never the token
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
    secured = "".join(f", {name}" for name in ("tls", "token") if result.get(name))
    print(
        f"valise load test: {result['clients']} clients, {result['elapsed_s']:.1f} s, "
        f"server {result['server']} ({info.get('server', '?')}{secured}, chunk "
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
