"""The parsers of the agent commands (watch, events, follow) and of the nc tools (frame,
decode), apart from the modules that run them.

``valise --help`` and ``valise ping`` build every subcommand's parser, but
run at most one command: the modules that run the agents import asyncio,
ssl and the watcher (most of a CLI start-up), so their parsers live here,
importing nothing heavier than argparse (tests/unit/client/test_startup.py).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .watchdefaults import DEFAULT_EXCLUDES, state_dir
from .wire import DEFAULT_MAX_DATA_IN

__all__ = ["events", "follow", "watch"]


def watch(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """Register ``watch`` (client/watchcli.py runs it) (``sub`` is argparse's subparsers action)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "watch",
        help="upload every new or changed file of a directory once it is complete",
        description="Scanner agent: poll DIR and upload new or changed files once they are "
        "complete (settled, closed by their writer, whole if DICOM); a JSON state file "
        "remembers what was sent.",
    )
    common(p)
    p.add_argument("dir", metavar="DIR", help="directory to watch (recursively)")
    p.add_argument(
        "--settle",
        type=_non_negative,
        default=5.0,
        help="seconds a file's size and mtime must stay unchanged (default 5)",
    )
    p.add_argument("--prefix", default="", help="key prefix (key = PREFIX + relative path)")
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="send only files that match (repeatable; e.g. '*.dcm')",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="never send files that match (repeatable; added to the defaults)",
    )
    p.add_argument(
        "--no-default-excludes",
        action="store_true",
        help=f"do not leave out {', '.join(DEFAULT_EXCLUDES)}",
    )
    p.add_argument("--state", help=f"state file (default: one per DIR and server in {state_dir()})")
    p.add_argument(
        "--interval", type=_positive, default=2.0, help="seconds between scans (default 2)"
    )
    _max_backoff_alias(p)
    p.add_argument("--ttl", type=int, help="seconds the server keeps each file")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    return p


def _max_backoff_alias(p: argparse.ArgumentParser) -> None:
    """``--max-backoff``: the old spelling of the common ``--retry-max-wait``.

    The agents had their own cap while ``--retry-max-wait`` was accepted and
    ignored by them; now one option means one thing everywhere, and the old
    spelling still works (hidden from --help) so existing service files run.
    """
    p.add_argument(
        "--max-backoff",
        dest="retry_max_wait",
        type=_positive,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def events(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> Any:
    """Register ``events [PREFIX] [--since ID]`` (``sub`` is argparse's subparsers action)."""
    p = sub.add_parser(
        "events",
        help="print change events under PREFIX as they happen",
        description="Subscribe to the change events under PREFIX and print one line per "
        "event (a JSON object per line with --json), reconnecting when the link drops.",
    )
    common(p)
    p.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    p.add_argument("--since", metavar="ID", help="replay the events after this event id first")
    return p


def follow(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> Any:
    """Register the ``follow`` subcommand (``sub`` is argparse's subparsers action)."""
    p = sub.add_parser(
        "follow",
        help="download every file stored under PREFIX into DIR as it arrives",
        description="Consumer agent: subscribe to the change events under PREFIX and "
        "download each stored file into DIR, verified and renamed into place.",
    )
    common(p)
    p.add_argument("prefix", metavar="PREFIX", help="key prefix to follow ('' for all)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="where files go")
    p.add_argument("--since", help="start after this event id instead of catching up")
    p.add_argument(
        "--mirror-deletes", action="store_true", help="remove local files deleted on the server"
    )
    p.add_argument("--exec", dest="exec_cmd", metavar="CMD", help="run CMD PATH per file")
    _max_backoff_alias(p)
    return p


def frame_and_decode(
    sub: Any,  # argparse's _SubParsersAction is private
    common: Callable[[argparse.ArgumentParser], None],
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Register ``frame`` and ``decode`` (client/nctools.py runs them); their parsers."""
    p: argparse.ArgumentParser = sub.add_parser("frame", help="write request frames to stdout")
    common(p)
    p.add_argument("--hello", action="store_true", help="start with HELLO (implied by a token)")
    fsub = p.add_subparsers(dest="frame_command", required=True, metavar="REQUEST")
    q = fsub.add_parser("put", help="PUT + DATA* + END(hex sha1)")
    q.add_argument("key")
    q.add_argument("file", help='path, or "-" for stdin')
    q.add_argument("--ttl", type=int)
    q.add_argument("--content-type")
    q.add_argument("--no-size", action="store_true", help="do not declare the size")
    q = fsub.add_parser("get", help="GET")
    q.add_argument("key")
    q.add_argument("--offset", type=int)
    q.add_argument("--length", type=int)
    fsub.add_parser("stat", help="STAT").add_argument("key")
    fsub.add_parser("delete", help="DELETE").add_argument("key")
    q = fsub.add_parser("list", help="LIST (one page)")
    q.add_argument("prefix", nargs="?", default="")
    q.add_argument("--cursor")
    q.add_argument("--limit", type=int)
    q = fsub.add_parser("ping", help="PING")
    q.add_argument("payload", nargs="?", default="{}", help="JSON object to echo")

    d: argparse.ArgumentParser = sub.add_parser("decode", help="print server frames from stdin")
    common(d)
    d.add_argument("--any", action="store_true", help="accept client frames too")
    d.add_argument("-o", "--output", help="write the DATA bytes to this file")
    d.add_argument("--max-frame", type=int, default=DEFAULT_MAX_DATA_IN, help="DATA limit")
    return p, d
