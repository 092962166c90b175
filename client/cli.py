"""Command line: ``python -m client COMMAND ...`` (or ``valise COMMAND ...``).

Commands::

    put FILE [KEY]            upload FILE ("-" for stdin, then KEY is required)
    put [-r] SOURCE... PREFIX upload files and (with -r) folders as PREFIX + relative path
    get KEY [-o FILE|-]       download (default: the key's last path part, in .)
    get -r PREFIX [-o DIR]    download every file under PREFIX into DIR
    stat KEY                  file info
    rm KEY                    delete (exit 3 when there was nothing to delete)
    ls [PREFIX]               list every file whose key starts with PREFIX
    ping                      round trip to the server
    watch DIR                 scanner agent: upload new or changed files once complete
    events [PREFIX]           print change events as they happen
    follow PREFIX -o DIR      consumer agent: download each file stored under PREFIX
    frame ...                 write request frames to stdout, for nc
    decode                    print server frames read from stdin, readably

Exit codes: see :mod:`client.console`. Each subcommand's parser names its
handler (``set_defaults(handler=...)``); ``main`` calls it and turns errors
into exit codes, so a command is added in one place.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any, Awaitable, Callable, NoReturn

from . import subparsers
from .console import (
    EXIT_ERROR,
    EXIT_USAGE,
    Session,
    UsageError,
    describe,
    error_json,
    exit_code_for,
    parse_server,
    print_json,
)
from .errors import ValiseError
from .progress import ProgressBar, human_bytes
from .wire import DEFAULT_PORT

__all__ = ["ProgressBar", "build_parser", "exit_code_for", "human_bytes", "main", "parse_server"]

_EPILOG = """\
environment: VALISE_SERVER (host:port, default 127.0.0.1:7070), VALISE_TOKEN.
exit codes: 0 ok, 1 other error, 2 usage, 3 not found, 4 integrity failure,
5 server unavailable/busy/cannot connect, 6 exists (put --no-clobber)."""


class _Later:
    """A module of this package imported when one of its functions is first called:
    ``valise --help`` and ``valise ping`` import only what they run (asyncio, ssl
    and the agents are most of a start-up)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            module = importlib.import_module(f".{self._name}", __package__)
            return getattr(module, attr)(*args, **kwargs)

        return call


commands, events, follow, probe, watchcli = (
    _Later(n) for n in ("commands", "events", "follow", "probe", "watchcli")
)

#: What a subcommand does with its parsed arguments; returns the exit code.
Handler = Callable[[argparse.Namespace], int]
#: A subcommand that talks to the server through the session's clients.
ClientCommand = Callable[[argparse.Namespace, Session], Awaitable[int]]


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
    parser.add_argument(
        "--retries", type=int, default=default(8), help="reconnects after a failure (default 8)"
    )
    parser.add_argument(
        "--retry-max-wait",
        type=float,
        default=default(60.0),
        help="longest wait between two tries, seconds (default 60)",
    )
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


def _parallel(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be 1 to 64: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        p.set_defaults(handler=_with_session(run))
        return p

    def common(p: argparse.ArgumentParser) -> None:
        _common(p, top=False)

    p = command("put", "upload a file, or files and folders (-r)", commands.put)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="SOURCE",
        help='FILE [KEY] (FILE "-" is stdin); with -r or more than two: SOURCE... PREFIX',
    )
    p.add_argument("-r", "--recursive", action="store_true", help="upload folders' files too")
    p.add_argument("--ttl", type=int, help="seconds to keep the file")
    p.add_argument("--content-type")
    p.add_argument(
        "--no-clobber",
        action="store_true",
        help="never replace a stored file: exit 6 when the key holds one "
        "(needs a server with the if_absent feature)",
    )
    _batch_options(p)
    p = command("get", "download a file, or every file under a prefix (-r)", commands.get)
    p.add_argument("key", metavar="KEY", help="a key; with -r a PREFIX")
    p.add_argument("-r", "--recursive", action="store_true", help="every file under PREFIX")
    p.add_argument("-o", "--output", help='path, or "-" for stdout; with -r a folder')
    p.add_argument("--offset", type=int)
    p.add_argument("--length", type=int)
    _batch_options(p)
    p = command("stat", "show file info", commands.stat)
    p.add_argument("key")
    p = command("rm", "delete a file", commands.rm)
    p.add_argument("key")
    p = command("ls", "list files", commands.ls)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("--limit", type=int, help="page size asked of the server")
    p = sub.add_parser("ping", help="check the server answers", epilog=_EPILOG)
    common(p)
    p.set_defaults(handler=probe.run)  # a blocking socket: no asyncio to import
    frame, decode = subparsers.frame_and_decode(sub, common)
    frame.set_defaults(handler=_frame)
    decode.set_defaults(handler=_decode)
    subparsers.watch(sub, common).set_defaults(handler=_watch)
    subparsers.events(sub, common).set_defaults(handler=_events)
    subparsers.follow(sub, common).set_defaults(handler=_follow)
    return parser


def _batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parallel",
        type=_parallel,
        default=4,
        metavar="N",
        help="connections for a batch of files (default 4)",
    )


def _with_session(command: ClientCommand) -> Handler:
    """A handler that builds the session's clients from the common options and runs ``command``."""

    async def run(args: argparse.Namespace) -> int:
        session = Session(args)
        try:
            return await command(args, session)
        finally:
            await session.close()

    def handler(args: argparse.Namespace) -> int:
        import asyncio  # here, not at the top: --help needs no event loop

        return asyncio.run(run(args))

    return handler


def _watch(args: argparse.Namespace) -> int:
    try:
        host, port = parse_server(args.server)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not os.path.isdir(args.dir):
        raise UsageError(f"not a directory: {args.dir}")
    return int(watchcli.run(args, host, port))


def _frame(args: argparse.Namespace) -> int:
    from . import nctools  # here: hashlib and the frame tools only for these two

    return nctools.run_frame(args)


def _decode(args: argparse.Namespace) -> int:
    from . import nctools

    return nctools.run_decode(args)


def _address(args: argparse.Namespace) -> tuple[str, int]:
    try:
        return parse_server(args.server)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _events(args: argparse.Namespace) -> int:
    return int(events.run(args, *_address(args)))


def _follow(args: argparse.Namespace) -> int:
    return int(follow.run(args, *_address(args)))


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one JSON object on stderr under ``--json``."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if self.json_errors:
            print_json(error_json(UsageError(f"{self.prog}: {message}")), err=True)
            raise SystemExit(EXIT_USAGE)
        super().error(message)


def _report(exc: BaseException, *, as_json: bool) -> None:
    """An error on stderr: one line and its details, or one JSON object."""
    if as_json:
        print_json(error_json(exc), err=True)
        return
    print(f"valise: {describe(exc)}", file=sys.stderr)
    if isinstance(exc, ValiseError):
        for name in ("expected", "actual", "stored", "received"):
            if name in exc.fields:
                print(f"  {name}: {exc.fields[name]}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        parser.error(str(exc))
    except ValiseError as exc:
        _report(exc, as_json=args.json)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        if args.json:
            print_json({"error": {"code": "interrupted", "exit_code": 130}}, err=True)
        else:
            print("valise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output closed early (| head): not worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        _report(exc, as_json=args.json)
        return EXIT_ERROR
