"""``valise follow PREFIX -o DIR``: the consumer agent, the mirror of ``watch``.

It subscribes to the change events under PREFIX (docs/protocol.md section
6.3) and downloads each stored file into DIR as it arrives. The rules:

- A key's path under DIR is the key without PREFIX, cut at each ``/`` into
  folders. A key whose path would have an empty, ``.`` or ``..`` part, a NUL,
  or (on Windows) a backslash, or whose folders in DIR are symbolic links or
  files, is skipped with a ``skipped`` line: nothing is ever written outside
  DIR, whatever the key.
- A download is verified (END against the bytes, and the stored SHA-1) and
  written to a temporary file beside its destination, then renamed into
  place: DIR only ever holds whole, verified files.
- At start (without ``--since``), and whenever the server says it no longer
  keeps some events (``complete: false``), it catches up with LIST: every
  file under PREFIX whose version it does not hold is fetched. A file
  already in DIR with the same size and SHA-1 is kept as it is.
- It remembers the version of each file it holds, so an event for a version
  already fetched (during a catch-up, say) fetches nothing.
- ``deleted`` events remove nothing unless ``--mirror-deletes``; then the
  local file goes, unless it holds a newer version than the one deleted.
- Disconnects are survived: it reconnects with backoff and subscribes again
  after the last event it handled, so no event is missed or handled twice
  while it runs.
- One line per file on stdout (JSON with ``--json``). ``--exec CMD`` runs CMD
  with the file's path as its last argument once the file is in place, with
  ``VALISE_KEY``, ``VALISE_SHA1``, ``VALISE_SIZE`` and ``VALISE_VERSION`` in
  its environment; one command at a time, in event order.

Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from . import tls
from .aio import AsyncClient
from .errors import NotFound, TransientError, ValiseError
from .events import EventStream, Gap
from .stopping import run_until_stopped
from .subparsers import follow as add_parser

__all__ = ["Follower", "add_parser", "local_path", "run"]

EXIT_OK = 0
EXIT_ERROR = 1

#: Bytes read at a time to hash a local file.
_READ = 1024 * 1024


def local_path(directory: str, prefix: str, key: str) -> str | None:
    """Where ``key`` goes under ``directory``, or None when it cannot go there safely."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    for part in parts:
        if part in ("", ".", "..") or "\x00" in part:
            return None
        if os.sep != "/" and (os.sep in part or (os.altsep or "/") in part or ":" in part):
            return None
    return os.path.join(directory, *parts)


def _make_parents(directory: str, path: str) -> bool:
    """Create the folders between ``directory`` and ``path``, following no link."""
    relative = os.path.relpath(os.path.dirname(path), directory)
    current = directory
    for part in [] if relative == os.curdir else relative.split(os.sep):
        current = os.path.join(current, part)
        if os.path.islink(current):
            return False
        if not os.path.exists(current):
            os.mkdir(current)
        elif not os.path.isdir(current):
            return False
    return not os.path.islink(path) and not os.path.isdir(path)


def _same_file(path: str, info: dict[str, Any]) -> bool:
    """The local file holds exactly the bytes ``info`` describes."""
    try:
        if os.path.getsize(path) != info.get("size"):
            return False
        sha1 = hashlib.sha1()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(_READ), b""):
                sha1.update(block)
    except OSError:
        return False
    return sha1.hexdigest() == info.get("sha1")


class Follower:
    """The agent: events in, verified files out. ``report`` prints one line per file."""

    def __init__(
        self,
        client: AsyncClient,
        stream: EventStream,
        directory: str,
        *,
        mirror_deletes: bool = False,
        exec_cmd: list[str] | None = None,
        report: Callable[[dict[str, Any]], None] = lambda line: None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.prefix = stream.prefix
        self.directory = os.path.abspath(directory)
        self.mirror_deletes = mirror_deletes
        self.exec_cmd = exec_cmd
        self.report = report
        #: key -> the version held in ``directory``.
        self.versions: dict[str, str] = {}

    async def run(self) -> None:
        """Catch up as needed, then handle events until cancelled."""
        resumed = self.stream.last_id is not None
        await self.stream.connect()
        if not resumed or not self.stream.complete:
            await self.catch_up()
        async for item in self.stream:
            if isinstance(item, Gap):
                await self.catch_up()
            elif item.get("event") == "stored":
                await self.fetch(item)
            elif item.get("event") == "deleted":
                self.delete(item)

    async def catch_up(self) -> None:
        """LIST everything under the prefix; fetch what is not held."""
        listed = set()
        attempt = 0
        while True:
            try:
                async for info in self.client.list(self.prefix):
                    listed.add(info.get("key"))
                    await self.fetch(info, listed=True)
                break
            except TransientError as exc:
                attempt += 1
                await self.stream.pause(exc, attempt)
        if self.mirror_deletes:
            for key in [k for k in self.versions if k not in listed]:
                self.delete({"key": key, "version": self.versions[key]})

    async def fetch(self, info: dict[str, Any], *, listed: bool = False) -> None:
        key = info.get("key")
        if not isinstance(key, str) or self.versions.get(key) == info.get("version"):
            return
        path = local_path(self.directory, self.prefix, key)
        try:
            if path is None or not _make_parents(self.directory, path):
                self.report({"event": "skipped", "key": key, "reason": "no safe path"})
                return
            if listed and _same_file(path, info):
                self.versions[key] = str(info.get("version"))
                return
            got = await self._download(key, path)
        except NotFound:
            return  # deleted or expired since: its own event follows, if any
        except (ValiseError, OSError) as exc:
            self.report({"event": "failed", "key": key, "reason": str(exc)})
            return
        self.versions[key] = str(got.get("version"))
        self.report(
            {
                "event": "stored",
                "key": key,
                "path": path,
                "size": got.get("size"),
                "sha1": got.get("sha1"),
                "version": got.get("version"),
            }
        )
        await self._hook(path, got)

    async def _download(self, key: str, path: str) -> dict[str, Any]:
        """GET into ``path``; a server that is away is waited for, for ever."""
        attempt = 0
        while True:
            try:
                return await self.client.get(key, path)
            except TransientError as exc:
                attempt += 1
                await self.stream.pause(exc, attempt)

    def delete(self, event: dict[str, Any]) -> None:
        key = event.get("key")
        if not isinstance(key, str) or not self.mirror_deletes:
            return
        held = self.versions.get(key)
        if held is not None and held != event.get("version"):
            return  # we hold a newer version than the one deleted
        self.versions.pop(key, None)
        path = local_path(self.directory, self.prefix, key)
        if path is None or os.path.islink(path) or not os.path.isfile(path):
            return
        try:
            os.unlink(path)
        except OSError as exc:
            self.report({"event": "failed", "key": key, "reason": str(exc)})
            return
        self.report({"event": "deleted", "key": key, "path": path})

    async def _hook(self, path: str, info: dict[str, Any]) -> None:
        if not self.exec_cmd:
            return
        env = dict(os.environ)
        for name in ("key", "sha1", "size", "version"):
            env[f"VALISE_{name.upper()}"] = str(info.get(name))
        try:
            proc = await asyncio.create_subprocess_exec(*self.exec_cmd, path, env=env)
            code = await proc.wait()
        except OSError as exc:
            self.report({"event": "failed", "key": info.get("key"), "reason": f"exec: {exc}"})
            return
        if code != 0:
            reason = f"exec exited with {code}"
            self.report({"event": "failed", "key": info.get("key"), "reason": reason})


def _printer(as_json: bool, quiet: bool) -> Callable[[dict[str, Any]], None]:
    def report(line: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(line, ensure_ascii=False), flush=True)
            return
        event = line["event"]
        if event == "stored":
            if not quiet:
                print(
                    f"stored {line['key']} -> {line['path']}  {line['size']} bytes, sha1 verified"
                )
        elif event == "deleted":
            if not quiet:
                print(f"deleted {line['key']} -> removed {line['path']}")
        else:
            print(f"{event} {line['key']}: {line['reason']}", file=sys.stderr)
        sys.stdout.flush()

    return report


def run(args: argparse.Namespace, host: str, port: int) -> int:
    """The ``follow`` subcommand: until SIGINT or SIGTERM (exit 0), or a fatal error."""

    def retry(exc: ValiseError, delay: float) -> None:
        if not args.quiet:
            print(f"valise: {exc}; reconnecting in {delay:.1f} s", file=sys.stderr)

    async def main() -> int:
        ssl = tls.from_args(args)
        options: dict[str, Any] = {"token": args.token, "ssl": ssl, "timeout": args.timeout}
        stream = EventStream(
            host,
            port,
            args.prefix,
            args.since,
            max_backoff=args.retry_max_wait,
            client_name="valise-follow",
            on_retry=retry,
            **options,
        )
        client = AsyncClient(
            host,
            port,
            retries=max(args.retries, 5),
            max_backoff=args.retry_max_wait,
            client_name="valise-follow",
            **options,
        )
        follower = Follower(
            client,
            stream,
            args.output,
            mirror_deletes=args.mirror_deletes,
            exec_cmd=shlex.split(args.exec_cmd) if args.exec_cmd else None,
            report=_printer(args.json, args.quiet),
        )
        try:
            await run_until_stopped(follower.run())
        finally:
            await stream.close()
            await client.close()
        return EXIT_OK

    return asyncio.run(main())
