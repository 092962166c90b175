"""The command line: flags to :class:`~.settings.Settings`, Ctrl-C, output, exit code."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import ssl
import sys
import time
from collections.abc import Sequence

from .. import tls
from ..aio import DEFAULT_PORT
from ..cli import parse_server
from ..errors import ValiseError
from ..stopping import on_stop
from .report import print_table, report
from .settings import (
    DEFAULT_DURATION,
    DEFAULT_MIX,
    DEFAULT_SIZES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Settings,
    UsageError,
    parse_mix,
    parse_sizes,
)
from .spawn import SpawnedServer, SpawnError, tls_mismatch
from .workload import LoadTest


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
    _connection_options(p)
    return p


def _connection_options(p: argparse.ArgumentParser) -> None:
    """The CLI's token and TLS options, with the same environment variables."""
    p.add_argument(
        "--token",
        default=os.environ.get("VALISE_TOKEN"),
        help="HELLO token (env VALISE_TOKEN); --spawn starts the server accepting it",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument(
        "--tls-ca",
        default=os.environ.get("VALISE_TLS_CA"),
        help="CA file to verify the server (implies --tls; env VALISE_TLS_CA)",
    )
    p.add_argument(
        "--tls-cert",
        default=os.environ.get("VALISE_TLS_CERT"),
        help="client certificate for mutual TLS (implies --tls; env VALISE_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key",
        default=os.environ.get("VALISE_TLS_KEY"),
        help="its private key (env VALISE_TLS_KEY)",
    )


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    try:
        return tls.from_args(args)
    except OSError as exc:  # ssl.SSLError is one
        given = [
            f"{name} {value}"
            for name, value in (
                ("--tls-ca", args.tls_ca),
                ("--tls-cert", args.tls_cert),
                ("--tls-key", args.tls_key),
            )
            if value
        ]
        raise UsageError(f"cannot load {', '.join(given)}: {exc}") from None


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
        token=args.token or None,
        ssl=_tls_context(args),
    )


async def _amain(test: LoadTest) -> None:
    main_task = asyncio.current_task()

    def interrupt(signame: str) -> None:
        if not test.stopping:
            test.stopping = test.interrupted = True
            test.say("loadtest: interrupted: finishing operations in flight (Ctrl-C again: abort)")
        elif main_task is not None:
            main_task.cancel()

    with on_stop(interrupt):
        await test.run()


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
            mismatch = tls_mismatch(args.server_arg, bool(args.tls or args.tls_ca or args.tls_cert))
            if args.spawn and mismatch:
                raise UsageError(mismatch)
            if args.spawn and sys.version_info < (3, 11):
                # The load test runs on 3.8+; the server it would start does not.
                raise UsageError(
                    "--spawn starts server.py with this Python, and the server needs Python "
                    f"3.11 or newer (this is {sys.version.split()[0]}): run the load test "
                    "with a newer Python, or give --server HOST:PORT of a running server"
                )
            default = os.environ.get("VALISE_SERVER", f"127.0.0.1:{DEFAULT_PORT}")
            host, port = parse_server(args.server or default)
            settings = settings_from(args, host, port)
        except (UsageError, ValueError) as exc:
            parser.error(str(exc))
        if args.spawn:
            spawned = SpawnedServer(args.server_arg, token=settings.token)
            host, port = spawned.start()
            settings = dataclasses.replace(settings, host=host, port=port)
        test = LoadTest(settings)
        try:
            asyncio.run(_amain(test))
        except (KeyboardInterrupt, asyncio.CancelledError):
            test.interrupted = True
            test.say("loadtest: aborted")
        except ValiseError as exc:  # from the first HELLO: wrong address, token or TLS
            hint = f"\n  hint: {exc.hint}" if exc.hint else ""
            print(f"loadtest: cannot use {host}:{port}: {exc}{hint}", file=sys.stderr)
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
