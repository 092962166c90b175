"""Command line: ``python -m client COMMAND ...`` (or ``valise COMMAND ...``).

Commands::

    put FILE [KEY]          upload FILE ("-" for stdin, then KEY is required)
    get KEY [-o FILE|-]     download (default: the key's last path part, in .)
    stat KEY                file info
    rm KEY                  delete (exit 3 when there was nothing to delete)
    ls [PREFIX]             list every file whose key starts with PREFIX
    ping                    round trip to the server
    watch DIR               scanner agent: upload new or changed files once settled
    frame ...               write request frames to stdout, for nc
    decode                  print server frames read from stdin, readably

Exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 integrity failure
(checksum/size mismatch, corrupt, digest check failed), 5 server unavailable,
busy, shutting down, timed out, or cannot connect.
Each subcommand's parser names its handler (``set_defaults(handler=...)``);
``main`` calls it and turns errors into exit codes, so a command is added in
one place.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Awaitable, Callable

from . import nctools, tls, watch
from .aio import DEFAULT_PORT, AsyncClient
from .errors import IntegrityError, NotFound, TransientError, ValiseError
from .progress import ProgressBar, human_bytes

__all__ = ["ProgressBar", "exit_code_for", "human_bytes", "main", "parse_server"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTEGRITY = 4
EXIT_UNAVAILABLE = 5

_EPILOG = """\
environment: VALISE_SERVER (host:port, default 127.0.0.1:7070), VALISE_TOKEN.
exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 integrity failure,
5 server unavailable/busy/cannot connect."""


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(exc, TransientError):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def parse_server(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (port 7070)."""
    host, sep, port = text.rpartition(":")
    bare_v6 = text.startswith("[") and text.endswith("]")
    if not sep or bare_v6 or (":" in host and not host.startswith("[")):
        host, port = text, str(DEFAULT_PORT)  # bare host or bare IPv6
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad server address {text!r} (want host:port)")
    return host, int(port)


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options valid before and after the command (defaults only at the top)."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    env_server = os.environ.get("VALISE_SERVER", f"127.0.0.1:{DEFAULT_PORT}")
    parser.add_argument("--server", default=default(env_server), help="host:port")
    parser.add_argument("--token", default=default(os.environ.get("VALISE_TOKEN")))
    parser.add_argument("--json", action="store_true", default=default(False))
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False))
    parser.add_argument("--timeout", type=float, default=default(30.0), help="seconds")
    parser.add_argument("--retries", type=int, default=default(3))
    parser.add_argument("--tls", action="store_true", default=default(False))
    parser.add_argument(
        "--tls-ca",
        default=default(os.environ.get("VALISE_TLS_CA")),
        help="CA file to verify the server (implies --tls)",
    )
    parser.add_argument(
        "--tls-cert",
        default=default(os.environ.get("VALISE_TLS_CERT")),
        help="client certificate for mutual TLS (implies --tls)",
    )
    parser.add_argument(
        "--tls-key", default=default(os.environ.get("VALISE_TLS_KEY")), help="its private key"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="valise",
        description="Valise client: files kept in memory for a limited time.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, run: ClientCommand) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, epilog=_EPILOG)
        _common(p, top=False)
        p.set_defaults(handler=_with_client(run))
        return p

    def common(p: argparse.ArgumentParser) -> None:
        _common(p, top=False)

    p = command("put", "upload a file", _put)
    p.add_argument("file", help='path, or "-" for stdin')
    p.add_argument("key", nargs="?")
    p.add_argument("--ttl", type=int, help="seconds to keep the file")
    p.add_argument("--content-type")
    p = command("get", "download a file", _get)
    p.add_argument("key")
    p.add_argument("-o", "--output", help='path, or "-" for stdout')
    p.add_argument("--offset", type=int)
    p.add_argument("--length", type=int)
    p = command("stat", "show file info", _stat)
    p.add_argument("key")
    p = command("rm", "delete a file", _rm)
    p.add_argument("key")
    p = command("ls", "list files", _ls)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, help="page size asked of the server")
    command("ping", "check the server answers", _ping)
    frame, decode = nctools.add_parsers(sub, common)
    frame.set_defaults(handler=nctools.run_frame)
    decode.set_defaults(handler=nctools.run_decode)
    watch.add_parser(sub, common).set_defaults(handler=_watch)
    return parser


def _fmt_time(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")


def _print_json(value: Any, *, err: bool = False) -> None:
    print(json.dumps(value, ensure_ascii=False), file=sys.stderr if err else sys.stdout)


class UsageError(Exception):
    """A bad argument found after parsing: reported as argparse does, exit 2."""


#: What a subcommand does with its parsed arguments; returns the exit code.
Handler = Callable[[argparse.Namespace], int]
#: A subcommand that talks to the server through one client.
ClientCommand = Callable[[argparse.Namespace, AsyncClient], Awaitable[int]]


def _address(args: argparse.Namespace) -> tuple[str, int]:
    try:
        return parse_server(args.server)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _with_client(command: ClientCommand) -> Handler:
    """A handler that opens one client from the common options and runs ``command``."""

    async def run(args: argparse.Namespace) -> int:
        host, port = _address(args)
        async with AsyncClient(
            host,
            port,
            token=args.token,
            timeout=args.timeout,
            retries=args.retries,
            ssl=tls.from_args(args),
            client_name="valise-cli",
        ) as client:
            return await command(args, client)

    def handler(args: argparse.Namespace) -> int:
        return asyncio.run(run(args))

    return handler


def _bar(args: argparse.Namespace, label: str) -> ProgressBar:
    return ProgressBar(label, enabled=sys.stderr.isatty() and not args.quiet)


async def _put(args: argparse.Namespace, client: AsyncClient) -> int:
    key = args.key
    if key is None:
        if args.file == "-":
            raise UsageError("put from stdin needs a KEY")
        key = os.path.basename(args.file)
    source: Any = sys.stdin.buffer if args.file == "-" else args.file
    bar = _bar(args, f"put {key}")
    try:
        info = await client.put(
            key, source, ttl=args.ttl, content_type=args.content_type, progress=bar
        )
    finally:
        bar.finish()
    if args.json:
        _print_json(info)
    elif not args.quiet:
        print(f"{info.get('key')}  {info.get('size')} bytes  sha1 {info.get('sha1')}")
    return EXIT_OK


async def _get(args: argparse.Namespace, client: AsyncClient) -> int:
    output = args.output
    if output is None:
        output = args.key.rstrip("/").rpartition("/")[2]
        if output in ("", ".", ".."):
            raise UsageError("cannot name a file after this key: give -o FILE")
    dest: Any = sys.stdout.buffer if output == "-" else output
    bar = _bar(args, f"get {args.key}")
    try:
        info = await client.get(
            args.key, dest, offset=args.offset, length=args.length, progress=bar
        )
    finally:
        bar.finish()
    if args.json:
        _print_json(info, err=output == "-")
    elif not args.quiet:
        where = "stdout" if output == "-" else output
        print(
            f"{args.key} -> {where}  {info.get('length')} bytes, sha1 verified",
            file=sys.stderr,
        )
    return EXIT_OK


async def _stat(args: argparse.Namespace, client: AsyncClient) -> int:
    info = await client.stat(args.key)
    if args.json:
        _print_json(info)
    else:
        for name, value in info.items():
            shown = _fmt_time(value) if name.endswith("_at") else value
            print(f"{name:>13}: {shown}")
    return EXIT_OK


async def _rm(args: argparse.Namespace, client: AsyncClient) -> int:
    deleted = await client.delete(args.key)
    if args.json:
        _print_json({"key": args.key, "deleted": deleted})
    if not deleted:
        if not args.quiet:
            print(f"valise: not found: {args.key}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if not args.quiet and not args.json:
        print(f"deleted {args.key}")
    return EXIT_OK


async def _ls(args: argparse.Namespace, client: AsyncClient) -> int:
    async for info in client.list(args.prefix, args.limit):
        if args.json:
            _print_json(info)
        else:
            size = human_bytes(info.get("size", 0))
            expires = _fmt_time(info.get("expires_at"))
            print(f"{size:>10}  expires {expires}  {info.get('key')}")
    return EXIT_OK


async def _ping(args: argparse.Namespace, client: AsyncClient) -> int:
    started = time.perf_counter()
    reply = await client.ping({"t": time.time()})
    ms = (time.perf_counter() - started) * 1000
    if args.json:
        _print_json({"reply": reply, "server": client.server_info, "ms": ms})
    elif not args.quiet:
        server = (client.server_info or {}).get("server", "server")
        print(f"pong from {server} at {client.host}:{client.port} in {ms:.1f} ms")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    host, port = _address(args)
    if not os.path.isdir(args.dir):
        raise UsageError(f"not a directory: {args.dir}")
    return watch.run(args, host, port)


def _report(exc: ValiseError) -> None:
    print(f"valise: {exc}", file=sys.stderr)
    for name in ("expected", "actual", "stored", "received"):
        if name in exc.fields:
            print(f"  {name}: {exc.fields[name]}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        parser.error(str(exc))
    except ValiseError as exc:
        _report(exc)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("valise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output closed early (| head): not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        print(f"valise: {exc}", file=sys.stderr)
        return EXIT_ERROR
