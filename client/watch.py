"""``python -m client watch DIR``: the scanner agent.

Polls ``DIR`` (recursively) and uploads every new or changed file once it has
settled, then remembers what it sent in a JSON state file so that a restart
does not send anything twice. The rules, in the order they apply:

- Skipped: dotfiles and dot-directories (any path part starting with ``.``),
  the state file and its temporary files, anything that is not a regular file.
- A file is *sent* when the state file holds an entry for its relative path
  with the same size, ``mtime_ns`` and key. Anything else is new or changed.
- A new or changed file is uploaded once its size and ``mtime_ns`` stayed the
  same for ``--settle`` seconds of this process's own observations (monotonic
  clock, immune to clock skew on network file systems). With ``--once`` there
  is only one observation, so the file's age (now minus mtime) must be at
  least ``--settle`` instead.
- The upload reads the file once, computing its SHA-1 over exactly the bytes
  sent (at most the size seen when it settled); the server's END check and
  the returned ``sha1`` must both agree with it. The file is stat'ed again
  afterwards: if it changed meanwhile, nothing is recorded and it is sent
  again once it settles (the new upload replaces the key atomically).
- Only then is the state file rewritten (temporary file, fsync, rename).

The watcher opens the scanner's files read-only and never renames, deletes
or touches them. When the server is unreachable, busy, shutting down or full,
the running watcher backs off exponentially (capped by ``--max-backoff``) and
tries again, forever; ``--once`` stops the pass and exits 5 instead. SIGTERM,
SIGINT (Ctrl+C) and, on Windows, SIGBREAK (Ctrl+Break) stop it between two
frames (:mod:`client.stopping`, no Unix-only loop API): an upload in flight is
abandoned (the server never shows a partial upload) and the state file is
always whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from . import tls
from .aio import AsyncClient
from .errors import (
    BadKey,
    BadRequest,
    BadVersion,
    Forbidden,
    IntegrityError,
    StorageFull,
    TooLarge,
    TransientError,
    Unauthorized,
    ValiseError,
)
from .files import fsync_dir
from .stopping import on_stop

__all__ = ["STATE_NAME", "SentRecord", "StateFile", "Watcher", "add_parser", "run", "scan"]

#: Default state file name, inside the watched directory.
STATE_NAME = ".valise-sent.json"
_STATE_VERSION = 1

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 4
EXIT_UNAVAILABLE = 5

#: Errors that say "try the same file again later" (server side, not the file).
_RETRY_LATER: tuple[type[ValiseError], ...] = (TransientError, StorageFull)
#: Errors that say "this version of this file will never be accepted".
_REFUSED: tuple[type[ValiseError], ...] = (BadKey, BadRequest, TooLarge)
#: Errors that say "this agent is misconfigured": stop, a restart is needed anyway.
_FATAL_CONFIG: tuple[type[ValiseError], ...] = (Unauthorized, Forbidden, BadVersion)


def add_parser(
    sub: Any, common: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Register the ``watch`` subcommand (``sub`` is argparse's subparsers action)."""
    p: argparse.ArgumentParser = sub.add_parser(
        "watch",
        help="upload every new or changed file of a directory once it settled",
        description="Scanner agent: poll DIR and upload new or changed files once they "
        "stopped changing; a JSON state file remembers what was sent.",
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
    p.add_argument("--state", help=f"state file (default DIR/{STATE_NAME})")
    p.add_argument(
        "--interval", type=_positive, default=2.0, help="seconds between scans (default 2)"
    )
    p.add_argument(
        "--max-backoff",
        type=_positive,
        default=60.0,
        help="longest wait between attempts while the server is down (default 60)",
    )
    p.add_argument("--ttl", type=int, help="seconds the server keeps each file")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    return p


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


# -- state file --------------------------------------------------------------


@dataclass(frozen=True)
class SentRecord:
    """What was sent for one relative path."""

    path: str
    size: int
    mtime_ns: int
    sha1: str
    key: str
    sent_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "sha1": self.sha1,
            "key": self.key,
            "sent_at": self.sent_at,
        }

    @classmethod
    def from_json(cls, value: Any) -> SentRecord | None:
        if not isinstance(value, dict):
            return None
        try:
            record = cls(
                path=value["path"],
                size=value["size"],
                mtime_ns=value["mtime_ns"],
                sha1=value["sha1"],
                key=value["key"],
                sent_at=float(value.get("sent_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None
        ints_ok = all(
            isinstance(v, int) and not isinstance(v, bool) for v in (record.size, record.mtime_ns)
        )
        strs_ok = all(isinstance(v, str) for v in (record.path, record.sha1, record.key))
        return record if ints_ok and strs_ok else None


class StateFile:
    """The JSON record of what was sent, rewritten atomically after each upload.

    Format: ``{"version": 1, "files": {RELPATH: {"path", "size", "mtime_ns",
    "sha1", "key", "sent_at"}}}``. An unreadable or malformed file is reported
    and treated as empty: the worst outcome is sending files again, which
    replaces each key with the same bytes.
    """

    def __init__(self, path: str, log: Callable[[str], None]) -> None:
        self.path = os.path.abspath(path)
        self.records: dict[str, SentRecord] = {}
        self._log = log

    def load(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                raw = json.loads(fh.read().decode("utf-8"))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._log(f"warning: ignoring unreadable state file {self.path}: {exc}")
            return
        files = raw.get("files") if isinstance(raw, dict) else None
        if not isinstance(files, dict):
            self._log(f"warning: ignoring malformed state file {self.path}")
            return
        for rel, value in files.items():
            record = SentRecord.from_json(value)
            if record is not None and isinstance(rel, str):
                self.records[rel] = record

    def save(self) -> None:
        """Write the whole state to a temporary file, fsync it, rename it into place."""
        directory, base = os.path.split(self.path)
        body = {
            "version": _STATE_VERSION,
            "files": {rel: rec.to_json() for rel, rec in sorted(self.records.items())},
        }
        data = json.dumps(body, indent=1, ensure_ascii=False).encode("utf-8") + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(directory)

    def is_temp(self, path: str) -> bool:
        """Whether ``path`` is the state file or one of its temporary files."""
        directory, base = os.path.split(self.path)
        other_dir, other = os.path.split(path)
        if other_dir != directory:
            return False
        return other == base or (other.startswith(f".{base}.") and other.endswith(".tmp"))


# -- scanning ----------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One regular file found by a scan."""

    rel: str  #: relative path, '/' separators
    path: str  #: absolute path
    size: int
    mtime_ns: int


def scan(root: str, skip: Callable[[str], bool]) -> Iterator[Seen]:
    """Regular files under ``root`` in a stable order, without dotfiles or ``skip(path)``."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # vanished or unreadable: the next pass sees it again
        subdirs: list[str] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.path)
                    continue
                st = entry.stat()  # follows a symlink to a regular file
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or skip(os.path.abspath(entry.path)):
                continue
            rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
            yield Seen(rel, os.path.abspath(entry.path), st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


class _HashingReader:
    """A binary stream over the file that hashes what it hands out, up to ``limit`` bytes."""

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        self._fh = fh
        self.remaining = limit
        self.sha1 = hashlib.sha1()
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > self.remaining:
            size = self.remaining
        data = self._fh.read(size) if size else b""
        self.remaining -= len(data)
        self.count += len(data)
        self.sha1.update(data)
        return data


class _ChangedWhileSending(Exception):
    """The file's size or mtime changed during its upload."""


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _open_unchanged(seen: Seen) -> IO[bytes]:
    """Open read-only; raise :class:`_ChangedWhileSending` unless it is still as seen."""
    fh = open(seen.path, "rb")  # noqa: SIM115 - the caller closes it
    try:
        st = os.fstat(fh.fileno())
    except BaseException:
        fh.close()
        raise
    if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
        fh.close()
        raise _ChangedWhileSending
    return fh


# -- the watcher -------------------------------------------------------------


class Watcher:
    """Scans, settles, uploads and records; see the module docstring for the rules."""

    def __init__(
        self,
        client: AsyncClient,
        root: str,
        state: StateFile,
        *,
        prefix: str = "",
        settle: float = 5.0,
        interval: float = 2.0,
        max_backoff: float = 60.0,
        ttl: int | None = None,
        once: bool = False,
        log: Callable[[str], None],
    ) -> None:
        self.client = client
        self.root = os.path.abspath(root)
        self.state = state
        self.prefix = prefix
        self.settle = settle
        self.interval = interval
        self.max_backoff = max_backoff
        self.ttl = ttl
        self.once = once
        self.log = log
        #: rel -> ((size, mtime_ns), monotonic time first seen like that)
        self._pending: dict[str, tuple[tuple[int, int], float]] = {}
        #: rel -> (size, mtime_ns) the server refused for good (bad key, too large)
        self._refused: dict[str, tuple[int, int]] = {}
        self._failures = 0
        self._down_logged = False
        #: Uploads done by this process (for the --once summary and tests).
        self.sent = 0

    def key_for(self, rel: str) -> str:
        return self.prefix + rel

    def _backoff(self) -> float:
        base = min(self.max_backoff, self.interval * 2.0 ** max(self._failures - 1, 0))
        return base * random.uniform(0.75, 1.0)

    def _is_sent(self, seen: Seen) -> bool:
        rec = self.state.records.get(seen.rel)
        return (
            rec is not None
            and rec.size == seen.size
            and rec.mtime_ns == seen.mtime_ns
            and rec.key == self.key_for(seen.rel)
        )

    def _settled(self, seen: Seen, now: float) -> bool:
        version = (seen.size, seen.mtime_ns)
        if self.once:
            return time.time_ns() - seen.mtime_ns >= self.settle * 1e9
        previous = self._pending.get(seen.rel)
        if previous is None or previous[0] != version:
            self._pending[seen.rel] = (version, now)
            return self.settle == 0
        return now - previous[1] >= self.settle

    async def run(self) -> int:
        """Scan until stopped (or one pass with ``once``); the exit code."""
        self.state.load()
        while True:
            code = await self.one_pass()
            if self.once:
                return code
            if code == EXIT_UNAVAILABLE:
                delay = self._backoff()
                if not self._down_logged:
                    self.log(f"server unavailable; retrying (backoff up to {self.max_backoff} s)")
                    self._down_logged = True
            else:
                delay = self.interval
            await asyncio.sleep(delay)

    async def one_pass(self) -> int:
        """One scan; uploads what settled. EXIT_UNAVAILABLE when the server could not take it."""
        if not _is_dir(self.root):
            self.log(f"warning: {self.root} is not a directory (yet); waiting")
            return EXIT_ERROR if self.once else EXIT_OK
        now = time.monotonic()
        seen_paths: set[str] = set()
        code = EXIT_OK
        for seen in scan(self.root, self.state.is_temp):
            seen_paths.add(seen.rel)
            if self._is_sent(seen):
                self._pending.pop(seen.rel, None)
                continue
            if self._refused.get(seen.rel) == (seen.size, seen.mtime_ns):
                continue
            if not self._settled(seen, now):
                continue
            result = await self._send(seen)
            if result == EXIT_UNAVAILABLE:
                return EXIT_UNAVAILABLE
            code = max(code, result)
        # Forget what is gone from the directory: the state file stays bounded.
        for gone in [rel for rel in self._pending if rel not in seen_paths]:
            del self._pending[gone]
        stale = [rel for rel in self.state.records if rel not in seen_paths]
        if stale:
            for rel in stale:
                del self.state.records[rel]
            self.state.save()
        return code

    async def _send(self, seen: Seen) -> int:
        key = self.key_for(seen.rel)
        started = time.monotonic()
        try:
            record = await self._upload(seen, key)
        except FileNotFoundError:
            self._pending.pop(seen.rel, None)
            return EXIT_OK
        except _ChangedWhileSending:
            self.log(f"{seen.rel} changed while it was sent; sending again once it settles")
            self._pending.pop(seen.rel, None)
            return EXIT_OK
        except OSError as exc:
            self.log(f"warning: cannot read {seen.rel}: {exc}")
            self._refused[seen.rel] = (seen.size, seen.mtime_ns)
            return EXIT_ERROR
        except _RETRY_LATER as exc:
            self._failures += 1
            if self.once or not self._down_logged:
                self.log(f"cannot send {seen.rel}: {exc}")
            return EXIT_UNAVAILABLE
        except _REFUSED as exc:
            self.log(f"server refused {seen.rel} as {key!r}: {exc}; skipped until it changes")
            self._refused[seen.rel] = (seen.size, seen.mtime_ns)
            return EXIT_ERROR
        except _FATAL_CONFIG:
            raise
        except IntegrityError as exc:
            self.log(f"integrity check failed for {seen.rel}: {exc}; will retry")
            self._pending.pop(seen.rel, None)
            return EXIT_INTEGRITY
        except ValiseError as exc:
            self.log(f"cannot send {seen.rel}: {exc}; will retry")
            self._pending.pop(seen.rel, None)
            return EXIT_ERROR
        if self._down_logged:
            self.log("server reachable again")
        self._failures = 0
        self._down_logged = False
        self._pending.pop(seen.rel, None)
        self.state.records[seen.rel] = record
        self.state.save()
        self.sent += 1
        elapsed = time.monotonic() - started
        self.log(
            f"sent {seen.rel} -> {key}  {record.size} bytes  sha1 {record.sha1}  {elapsed:.2f} s"
        )
        return EXIT_OK

    async def _upload(self, seen: Seen, key: str) -> SentRecord:
        with _open_unchanged(seen) as fh:
            reader = _HashingReader(fh, seen.size)
            info = await self.client.put(key, reader, ttl=self.ttl, size=seen.size)
            after = os.fstat(fh.fileno())
        local = reader.sha1.hexdigest()
        if reader.count != seen.size or (after.st_size, after.st_mtime_ns) != (
            seen.size,
            seen.mtime_ns,
        ):
            raise _ChangedWhileSending
        remote = info.get("sha1")
        if not isinstance(remote, str) or remote.lower() != local or info.get("size") != seen.size:
            raise IntegrityError(
                "the server's sha1/size differ from what was sent",
                fields={"expected": local, "actual": remote},
            )
        return SentRecord(seen.rel, seen.size, seen.mtime_ns, local, key, time.time())


# -- command line ------------------------------------------------------------


def _log(message: str) -> None:
    """One line on stderr; never file contents (paths, keys, sizes, digests only)."""
    stamp = datetime.now().isoformat(sep=" ", timespec="seconds")
    print(f"{stamp} valise watch: {message}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace, host: str, port: int, root: str, state_path: str) -> int:
    log = _log
    state = StateFile(state_path, log)
    client = AsyncClient(
        host,
        port,
        token=args.token,
        timeout=args.timeout,
        retries=args.retries,
        max_backoff=min(5.0, args.max_backoff),
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
        max_backoff=args.max_backoff,
        ttl=args.ttl,
        once=args.once,
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
    try:
        with on_stop(stop):
            code = await watcher.run()
    except asyncio.CancelledError:
        if not stopping:
            raise
        code = EXIT_OK
        log(f"{stopping[0]}: stopped ({watcher.sent} sent)")
    except _FATAL_CONFIG as exc:
        log(f"server refuses this agent: {exc}")
        code = EXIT_ERROR
    finally:
        await client.close()
    if args.once and not args.quiet:
        log(f"pass done: {watcher.sent} sent")
    return code


def run(args: argparse.Namespace, host: str, port: int) -> int:
    """The ``watch`` command; its exit code."""
    root = os.path.abspath(args.dir)
    state_path = os.path.abspath(args.state or os.path.join(root, STATE_NAME))
    return asyncio.run(_main(args, host, port, root, state_path))
