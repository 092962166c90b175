"""The ``watch`` command line: its options, the log, the stop signals, the exit code.

The agent itself is :class:`client.watch.Watcher`; this module builds it from
the options, logs one line per event on stderr (never file contents: paths,
keys, sizes and digests only), and stops it on SIGINT, SIGTERM or Ctrl+Break.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime

from . import tls, writers
from .aio import AsyncClient
from .stopping import on_stop
from .subparsers import watch as add_parser
from .watch import FATAL_CONFIG, Watcher, summary
from .watchscan import Filters
from .watchstate import LEGACY_NAME, StateFile, default_state_path

__all__ = ["add_parser", "run"]

EXIT_OK = 0
EXIT_ERROR = 1


def _log(message: str) -> None:
    """One line on stderr; never file contents (paths, keys, sizes, digests only)."""
    stamp = datetime.now().isoformat(sep=" ", timespec="seconds")
    print(f"{stamp} valise watch: {message}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace, host: str, port: int, root: str) -> int:
    log = _log
    state_path = args.state or default_state_path(root, host, port)
    state = StateFile(state_path, log, legacy=os.path.join(root, LEGACY_NAME))
    client = AsyncClient(
        host,
        port,
        token=args.token,
        timeout=args.timeout,
        retries=args.retries,
        max_backoff=min(5.0, args.retry_max_wait),
        ssl=tls.from_args(args),
        client_name="valise-watch",
    )
    watcher = Watcher(
        client,
        root,
        state,
        prefix=args.prefix,
        settle=args.settle,
        interval=args.interval,
        max_backoff=args.retry_max_wait,
        ttl=args.ttl,
        once=args.once,
        filters=Filters(args.include, args.exclude, defaults=not args.no_default_excludes),
        log=log,
    )
    task = asyncio.current_task()
    assert task is not None
    stopping: list[str] = []

    def stop(signame: str) -> None:
        if not stopping:
            stopping.append(signame)
            task.cancel()

    if not args.quiet:
        log(f"watching {root} -> {host}:{port} prefix {args.prefix!r} state {state.path}")
        writing = "yes" if writers.can_tell() else "no (this system cannot tell)"
        log(
            f"a file goes once unchanged for {args.settle:g} s and, if DICOM, whole; "
            f"open-for-writing check: {writing}"
        )
    try:
        with on_stop(stop):
            code = await watcher.run()
    except asyncio.CancelledError:
        if not stopping:
            raise
        code = EXIT_OK
        log(f"{stopping[0]}: stopped ({watcher.sent} sent)")
    except FATAL_CONFIG as exc:
        log(f"server refuses this agent: {exc}" + (f" (hint: {exc.hint})" if exc.hint else ""))
        code = EXIT_ERROR
    finally:
        await client.close()
    if args.once and not args.quiet:
        log(
            f"pass done: {watcher.sent} sent"
            + (f"; {summary(watcher.tally)}" * bool(watcher.tally))
        )
    return code


def run(args: argparse.Namespace, host: str, port: int) -> int:
    """The ``watch`` command; its exit code."""
    return asyncio.run(_main(args, host, port, os.path.abspath(args.dir)))
