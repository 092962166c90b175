"""What every command shares: exit codes, the server address, clients from the options, output.

Exit codes (the CLI's contract, docs/client.md "Exit codes"): 0 ok, 1 any
other error, 2 usage, 3 not found, 4 integrity failure (checksum/size
mismatch, corrupt, a failed digest check), 5 server unavailable, busy,
shutting down, timed out, or cannot connect, 6 the key already holds a file
(``put --no-clobber``).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import Exists, IntegrityError, NotFound, TransientError, ValiseError
from .wire import DEFAULT_PORT

if TYPE_CHECKING:  # imported when a session starts: `valise --help` needs no asyncio
    from .aio import AsyncClient

__all__ = [
    "EXIT_ERROR",
    "EXIT_EXISTS",
    "EXIT_INTEGRITY",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "Session",
    "UsageError",
    "describe",
    "error_json",
    "exit_code_for",
    "fmt_time",
    "parse_server",
    "print_json",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTEGRITY = 4
EXIT_UNAVAILABLE = 5
EXIT_EXISTS = 6


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an error."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(exc, TransientError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, Exists):
        return EXIT_EXISTS
    return EXIT_ERROR


class UsageError(Exception):
    """A bad argument found after parsing: reported as argparse does, exit 2."""


def parse_server(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (port 7070); a URL is refused with a suggestion."""
    if "://" in text or "/" in text:
        bare = text.partition("://")[2] if "://" in text else text
        bare = bare.split("/", 1)[0] or "HOST:PORT"
        raise ValueError(f"--server takes HOST:PORT, not a URL: try --server {bare}")
    host, sep, port = text.rpartition(":")
    bare_v6 = text.startswith("[") and text.endswith("]")
    if not sep or bare_v6 or (":" in host and not host.startswith("[")):
        host, port = text, str(DEFAULT_PORT)  # bare host or bare IPv6
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad server address {text!r} (want host:port)")
    return host, int(port)


class Session:
    """Clients built from the common options; every one is closed at the end.

    One-file commands use :meth:`client`; batches ask for several, one per
    connection, with :meth:`new_client`.
    """

    def __init__(self, args: argparse.Namespace, *, name: str = "valise-cli") -> None:
        try:
            self.host, self.port = parse_server(args.server)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.args = args
        self.name = name
        from . import tls  # ssl: only once a command talks to a server

        self._ssl = tls.from_args(args)
        self._clients: list[AsyncClient] = []
        self._first: AsyncClient | None = None

    def new_client(self) -> AsyncClient:
        from .aio import AsyncClient

        client = AsyncClient(
            self.host,
            self.port,
            token=self.args.token,
            timeout=self.args.timeout,
            retries=self.args.retries,
            max_backoff=self.args.retry_max_wait,
            ssl=self._ssl,
            client_name=self.name,
            on_retry=None if self.args.quiet else self._tell_retry,
        )
        self._clients.append(client)
        return client

    def _tell_retry(self, exc: ValiseError, attempt: int, delay: float) -> None:
        """One line per retry: a person waiting sees why, and for how long."""
        if sys.stderr is not None:  # none under pythonw
            retries = self.args.retries
            print(f"valise: {exc}; retry {attempt} of {retries} in {delay:.1f} s", file=sys.stderr)

    def client(self) -> AsyncClient:
        """The session's first client (made on first use)."""
        if self._first is None:
            self._first = self.new_client()
        return self._first

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


def describe(exc: BaseException) -> str:
    """One line for an error: ours as they print, an ``OSError`` without its errno noise."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        return ": ".join([exc.strerror, *(str(n) for n in names)])
    return str(exc)


def error_json(exc: BaseException) -> dict[str, Any]:
    """``{"error": {...}}``: what ``--json`` prints on stderr instead of a message."""
    if isinstance(exc, ValiseError):
        body = exc.as_json()
    elif isinstance(exc, UsageError):
        body = {"code": "usage", "message": str(exc)}
    elif isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno or 0, "os_error").lower()
        body = {"code": code, "message": describe(exc)}
        if exc.filename is not None:
            body["path"] = str(exc.filename)
    else:
        body = {"code": type(exc).__name__.lower(), "message": str(exc)}
    body["exit_code"] = EXIT_USAGE if isinstance(exc, UsageError) else exit_code_for(exc)
    return {"error": body}


def fmt_time(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    return datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")


def print_json(value: Any, *, err: bool = False) -> None:
    print(json.dumps(value, ensure_ascii=False), file=sys.stderr if err else sys.stdout)
