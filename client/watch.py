"""``python -m client watch DIR``: the scanner agent.

Polls ``DIR`` (recursively) and uploads every new or changed file once it is
complete, then remembers what it sent in a JSON state file (a per-user
folder, :mod:`client.watchstate`) so that a restart does not send anything
twice. The rules, in the order they apply:

- Left out: dotfiles and dot-folders, the state file, anything that is not a
  regular file, and what the include/exclude globs leave out
  (:mod:`client.watchscan`; ``Thumbs.db``, ``*.tmp``, ``*.part``... by default).
- A file is *sent* when the state file holds an entry for its relative path
  with the same size, ``mtime_ns`` and key. Anything else is new or changed.
- A new or changed file is uploaded only once it is complete, which takes
  every signal that applies:

  1. its size and ``mtime_ns`` stayed the same for ``--settle`` seconds of
     this process's own observations (monotonic clock, immune to clock skew
     on network file systems); with ``--once`` there is one observation, so
     its age (now minus mtime) must be at least ``--settle`` instead;
  2. no other program holds it open for writing, where the system can tell
     (:mod:`client.writers`: Linux and Windows);
  3. a DICOM file (``DICM`` at byte 128) parses to its end (:mod:`client.dicom`).

- The upload reads the file once, computing its SHA-1 over exactly the bytes
  sent (at most the size seen when it settled); the server's END check and
  the returned ``sha1`` must both agree with it. The file is stat'ed again
  afterwards: if it changed meanwhile, nothing is recorded and it is sent
  again once complete (the new upload replaces the key atomically).
- A key this agent never sent goes up create-only (``if_absent``,
  docs/protocol.md section 6.4) when the server offers it, so it never
  replaces another agent's file: ``exists`` with the same SHA-1 and size
  is recorded as sent, with other bytes the file is skipped until it changes
  (:mod:`client.watchsend`).
- Only then is the state file rewritten (temporary file, fsync, rename).
- Every pass that leaves files waiting says how many and why (the running
  agent when that changes, ``--once`` at its end).

The watcher opens the scanner's files read-only and never renames, deletes
or touches them. When the server is unreachable, busy, shutting down or full,
the running watcher backs off exponentially (capped by ``--retry-max-wait``) and
tries again, forever; ``--once`` stops the pass and exits 5 instead. SIGTERM,
SIGINT (Ctrl+C) and, on Windows, SIGBREAK (Ctrl+Break) stop it between two
frames (:mod:`client.stopping`, no Unix-only loop API): an upload in flight is
abandoned (the server never shows a partial upload) and the state file is
always whole.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from typing import Callable

from . import dicom, writers
from .aio import AsyncClient
from .backoff import ceiling
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
from .watchscan import Filters, Seen, scan
from .watchsend import AlreadyThere, ChangedWhileSending, Taken, send_file
from .watchstate import SentRecord, StateFile

__all__ = ["EXIT_UNAVAILABLE", "FATAL_CONFIG", "Watcher"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTEGRITY = 4
EXIT_UNAVAILABLE = 5

#: Errors that say "try the same file again later" (server side, not the file).
_RETRY_LATER: tuple[type[ValiseError], ...] = (TransientError, StorageFull)
#: Errors that say "this version of this file will never be accepted".
_REFUSED: tuple[type[ValiseError], ...] = (BadKey, BadRequest, TooLarge)
#: Errors that say "this agent is misconfigured": stop, a restart is needed anyway.
FATAL_CONFIG: tuple[type[ValiseError], ...] = (Unauthorized, Forbidden, BadVersion)

#: Why a file waits, as the pass summary says it.
CHANGING = "still changing"
OPEN = "open for writing by another program"
PARTIAL_DICOM = "incomplete DICOM"
REFUSED = "refused by the server until it changes"


#: Reasons that leave a file out for good (until the options change), not for later.
LEFT_OUT = frozenset({"excluded", "not included", "not a regular file"})


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def summary(tally: collections.Counter[str]) -> str:
    """``'4 waiting (3 still changing, 1 incomplete DICOM); 2 left out (2 excluded)'``."""

    def reasons(items: list[tuple[str, int]]) -> str:
        ordered = sorted(items, key=lambda i: (-i[1], i[0]))
        return ", ".join(f"{n} {why}" for why, n in ordered)

    waiting = [(why, n) for why, n in tally.items() if why not in LEFT_OUT]
    left_out = [(why, n) for why, n in tally.items() if why in LEFT_OUT]
    parts = []
    if waiting:
        parts.append(f"{sum(n for _, n in waiting)} waiting ({reasons(waiting)})")
    if left_out:
        parts.append(f"{sum(n for _, n in left_out)} left out ({reasons(left_out)})")
    return "; ".join(parts)


class Watcher:
    """Scans, checks completeness, uploads and records; see the module docstring."""

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
        filters: Filters | None = None,
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
        self.filters = filters if filters is not None else Filters()
        self.log = log
        #: rel -> ((size, mtime_ns), monotonic time first seen like that)
        self._pending: dict[str, tuple[tuple[int, int], float]] = {}
        #: rel -> (size, mtime_ns) the server refused for good (bad key, too large)
        self._refused: dict[str, tuple[int, int]] = {}
        #: rel -> ((size, mtime_ns), why the DICOM check failed), so a version is parsed once
        self._partial: dict[str, tuple[tuple[int, int], str]] = {}
        self._failures = 0
        #: rel -> ((size, mtime_ns), upload_id) of uploads a lost link left open
        self._open: dict[str, tuple[tuple[int, int], str]] = {}
        self._down_logged = False
        self._said_no_if_absent = False
        self._last_tally: collections.Counter[str] = collections.Counter()
        #: Uploads done by this process (for the summary and tests).
        self.sent = 0
        #: Why files were left waiting in the last pass, by reason.
        self.tally: collections.Counter[str] = collections.Counter()

    def key_for(self, rel: str) -> str:
        return self.prefix + rel

    def _backoff(self) -> float:
        base = ceiling(max(self._failures, 1), self.interval, self.max_backoff)
        return base * random.uniform(0.75, 1.0)

    def _is_sent(self, seen: Seen) -> bool:
        rec = self.state.records.get(seen.rel)
        return (
            rec is not None
            and rec.size == seen.size
            and rec.mtime_ns == seen.mtime_ns
            and rec.key == self.key_for(seen.rel)
        )

    def _unsettled(self, seen: Seen, now: float) -> str | None:
        """Why ``seen`` has not settled yet, or None."""
        version = (seen.size, seen.mtime_ns)
        if self.once:
            if time.time_ns() - seen.mtime_ns >= self.settle * 1e9:
                return None
            return f"younger than --settle {self.settle:g} s"
        previous = self._pending.get(seen.rel)
        if previous is None or previous[0] != version:
            self._pending[seen.rel] = (version, now)
            return None if self.settle == 0 else CHANGING
        return None if now - previous[1] >= self.settle else CHANGING

    def _partial_dicom(self, seen: Seen) -> str | None:
        """Why a DICOM file is not whole yet (checked once per size and mtime), or None."""
        version = (seen.size, seen.mtime_ns)
        cached = self._partial.get(seen.rel)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            why = dicom.check_file(seen.path)
        except OSError:
            return None  # the upload meets the same error and reports it
        if why is None:
            self._partial.pop(seen.rel, None)
            return None
        self._partial[seen.rel] = (version, why)
        self.log(f"waiting for {seen.rel}: {PARTIAL_DICOM} ({why})")
        return why

    async def run(self) -> int:
        """Scan until stopped (or one pass with ``once``); the exit code."""
        self.state.load()
        while True:
            code = await self.one_pass()
            if self.once:
                return code
            if self.tally != self._last_tally and self.tally:
                self.log(f"pass: {summary(self.tally)}")
            self._last_tally = self.tally
            if code == EXIT_UNAVAILABLE:
                delay = self._backoff()
                if not self._down_logged:
                    self.log(f"server unavailable; retrying (backoff up to {self.max_backoff} s)")
                    self._down_logged = True
            else:
                delay = self.interval
            await asyncio.sleep(delay)

    async def one_pass(self) -> int:
        """One scan; uploads what is complete. EXIT_UNAVAILABLE: the server could not take it."""
        self.tally = collections.Counter()
        if not _is_dir(self.root):
            self.log(f"warning: {self.root} is not a directory (yet); waiting")
            return EXIT_ERROR if self.once else EXIT_OK
        seen_paths, candidates = self._scan(time.monotonic())
        code = await self._send_complete(candidates, self.tally)
        # Forget what is gone from the directory: the state file stays bounded.
        for table in (self._pending, self._partial, self._refused, self._open):
            for gone in [rel for rel in table if rel not in seen_paths]:
                del table[gone]
        stale = [rel for rel in self.state.records if rel not in seen_paths]
        if stale:
            for rel in stale:
                del self.state.records[rel]
            self.state.save()
        return code

    def _scan(self, now: float) -> tuple[set[str], list[Seen]]:
        """(every relative path present, the new or changed files that settled)."""
        tally = self.tally
        seen_paths: set[str] = set()
        candidates: list[Seen] = []

        def left_out(rel: str, why: str) -> None:
            seen_paths.add(rel)
            tally[why] += 1

        for seen in scan(self.root, self.state.is_temp, left_out):
            seen_paths.add(seen.rel)
            why = self.filters.excluded(seen.rel)
            if why is None and self._is_sent(seen):
                self._pending.pop(seen.rel, None)
                continue
            if why is None and self._refused.get(seen.rel) == (seen.size, seen.mtime_ns):
                why = REFUSED
            if why is None:
                why = self._unsettled(seen, now)
            if why is not None:
                tally[why] += 1
                continue
            candidates.append(seen)
        return seen_paths, candidates

    async def _send_complete(self, candidates: list[Seen], tally: collections.Counter[str]) -> int:
        code = EXIT_OK
        held = writers.held_for_writing(c.path for c in candidates) if candidates else set()
        for seen in candidates:
            if held and seen.path in held:
                tally[OPEN] += 1
                continue
            if self._partial_dicom(seen) is not None:
                tally[PARTIAL_DICOM] += 1
                continue
            result = await self._send(seen)
            if result == EXIT_UNAVAILABLE:
                return EXIT_UNAVAILABLE
            code = max(code, result)
        return code

    async def _send(self, seen: Seen) -> int:
        key = self.key_for(seen.rel)
        started = time.monotonic()
        try:
            record = await self._upload(seen, key)
        except FileNotFoundError:
            self._pending.pop(seen.rel, None)
            return EXIT_OK
        except ChangedWhileSending:
            self.log(f"{seen.rel} changed while it was sent; sending again once it settles")
            self._pending.pop(seen.rel, None)
            return EXIT_OK
        except AlreadyThere as there:
            self.log(f"{seen.rel}: {key} is already on the server with the same sha1; recorded")
            self._record(seen, there.record, sent=False)
            return EXIT_OK
        except Taken as exc:
            self.log(
                f"server already holds another file as {key!r} ({exc}); not replaced, "
                f"{seen.rel} skipped until it changes"
            )
            self._refused[seen.rel] = (seen.size, seen.mtime_ns)
            return EXIT_ERROR
        except OSError as exc:
            self.log(f"warning: cannot read {seen.rel}: {exc}")
            self._refused[seen.rel] = (seen.size, seen.mtime_ns)
            return EXIT_ERROR
        except _RETRY_LATER as exc:
            self._failures += 1
            if exc.upload_id is not None:
                self._open[seen.rel] = ((seen.size, seen.mtime_ns), exc.upload_id)
            if self.once or not self._down_logged:
                hint = f" (hint: {exc.hint})" if exc.hint else ""
                self.log(f"cannot send {seen.rel}: {exc}{hint}")
            return EXIT_UNAVAILABLE
        except _REFUSED as exc:
            self.log(f"server refused {seen.rel} as {key!r}: {exc}; skipped until it changes")
            self._refused[seen.rel] = (seen.size, seen.mtime_ns)
            return EXIT_ERROR
        except FATAL_CONFIG:
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
        self._record(seen, record)
        elapsed = time.monotonic() - started
        self.log(
            f"sent {seen.rel} -> {key}  {record.size} bytes  sha1 {record.sha1}  {elapsed:.2f} s"
        )
        return EXIT_OK

    def _record(self, seen: Seen, record: SentRecord, *, sent: bool = True) -> None:
        self._pending.pop(seen.rel, None)
        self.state.records[seen.rel] = record
        self.state.save()
        self.sent += sent

    async def _create_only(self, seen: Seen, key: str) -> bool:
        """Whether to upload ``key`` with ``if_absent``: never sent by us, and the server can.

        A key this agent sent before is its own to replace (the file changed).
        One it never sent may hold another agent's file, or one sent before
        the state file was lost: never replace it unseen (docs/protocol.md 6.4).
        """
        record = self.state.records.get(seen.rel)
        if record is not None and record.key == key:
            return False
        if self.client.server_info is None:
            await self.client.hello()
        listed = (self.client.server_info or {}).get("features")
        offered = isinstance(listed, list) and "if_absent" in listed
        if not offered and not self._said_no_if_absent:
            self._said_no_if_absent = True
            self.log("the server does not offer if_absent: a new key replaces what it holds")
        return offered

    async def _upload(self, seen: Seen, key: str) -> SentRecord:
        create_only = await self._create_only(seen, key)
        version, upload_id = self._open.pop(seen.rel, (None, None))
        if version != (seen.size, seen.mtime_ns):
            upload_id = None  # the file changed since: its bytes are not the server's
        return await send_file(
            self.client, seen, key, ttl=self.ttl, create_only=create_only, upload_id=upload_id
        )
