"""The subcommands that talk to a server: put, get, stat, rm, ls (ping: client/probe.py).

Each is ``async def (args, session) -> exit code``. ``put`` and ``get`` move
one file, or with ``-r`` (or several sources) a whole study through a
:class:`~client.batch.Batch`: one progress bar for the batch, a line per
failed file on stderr, a summary last, and an exit code that is 0 only when
every file went up or down.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .batch import Batch, Outcome, Summary
from .console import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    Session,
    UsageError,
    describe,
    error_json,
    exit_code_for,
    fmt_time,
    print_json,
)
from .errors import NotFound, ValiseError
from .localpaths import Planned, PutPlan, UnsafeKey, folder_prefix, local_target, plan_put
from .progress import ProgressBar, human_bytes

__all__ = ["get", "ls", "put", "rm", "stat"]


def _bar(args: argparse.Namespace, label: str) -> ProgressBar:
    # No stderr at all under pythonw (a Windows scheduled task): no bar.
    tty = sys.stderr is not None and sys.stderr.isatty()
    return ProgressBar(label, enabled=tty and not args.quiet)


# -- put -------------------------------------------------------------------


def _one_or_many(args: argparse.Namespace) -> tuple[str, str] | PutPlan:
    """``put``'s arguments: ``(FILE, KEY)`` for one file, else the batch's plan.

    With ``-r``, or more than two arguments, the last one is a PREFIX; two
    without ``-r`` are FILE KEY, as before batches existed.
    """
    paths: list[str] = args.paths
    if args.recursive or len(paths) > 2:
        if len(paths) < 2:
            raise UsageError('put -r needs SOURCE... PREFIX (PREFIX may be "")')
        if "-" in paths[:-1]:
            raise UsageError('"-" (stdin) uploads one file: put - KEY')
        try:
            return plan_put(paths[:-1], paths[-1], recursive=args.recursive)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    source = paths[0]
    if source != "-" and os.path.isdir(source):
        raise UsageError(f"{source} is a directory: use put -r {source} PREFIX")
    if len(paths) == 2:
        return source, paths[1]
    if source == "-":
        raise UsageError("put from stdin needs a KEY")
    return source, os.path.basename(source)


async def put(args: argparse.Namespace, session: Session) -> int:
    what = _one_or_many(args)
    if isinstance(what, PutPlan):
        return await _put_batch(args, session, what)
    source, key = what
    data: Any = sys.stdin.buffer if source == "-" else source
    bar = _bar(args, f"put {key}")
    try:
        info = await session.client().put(
            key,
            data,
            ttl=args.ttl,
            content_type=args.content_type,
            progress=bar,
            if_absent=args.no_clobber,
            resumable=None,  # resumable when the server offers it and it helps
        )
    finally:
        bar.finish()
    if args.json:
        print_json(info)
    elif not args.quiet:
        print(f"{info.get('key')}  {info.get('size')} bytes  sha1 {info.get('sha1')}")
    return EXIT_OK


async def _put_batch(args: argparse.Namespace, session: Session, plan: PutPlan) -> int:
    for path, why in plan.skipped:
        _warn(args, f"skipped {path}: {why}")
    for path, error in plan.unreadable:
        _warn(args, f"cannot read {path}: {error.strerror or error}", force=True)
    bar = _bar(args, f"put {len(plan.files)} files")
    batch = Batch(
        session.new_client,
        parallel=args.parallel,
        progress=bar,
        on_outcome=_PerFile(args, "put", bar, len(plan.files)),
    )
    try:
        summary = await batch.put(
            plan.files,
            ttl=args.ttl,
            content_type=args.content_type,
            if_absent=args.no_clobber,
            resumable=None,
        )
    finally:
        bar.finish()
    return _summarize(args, "put", summary, extra_failures=len(plan.unreadable))


# -- get -------------------------------------------------------------------


async def get(args: argparse.Namespace, session: Session) -> int:
    if args.recursive:
        if args.offset is not None or args.length is not None:
            raise UsageError("get -r takes whole files: no --offset or --length")
        return await _get_batch(args, session, args.key, args.output or ".")
    output = args.output
    if output is None:
        output = args.key.rstrip("/").rpartition("/")[2]
        if output in ("", ".", ".."):
            raise UsageError("cannot name a file after this key: give -o FILE")
    dest: Any = sys.stdout.buffer if output == "-" else output
    bar = _bar(args, f"get {args.key}")
    try:
        info = await session.client().get(
            args.key, dest, offset=args.offset, length=args.length, progress=bar
        )
    finally:
        bar.finish()
    if args.json:
        print_json(info, err=output == "-")
    elif not args.quiet:
        where = "stdout" if output == "-" else output
        print(
            f"{args.key} -> {where}  {info.get('length')} bytes, sha1 verified",
            file=sys.stderr,
        )
    return EXIT_OK


async def _get_batch(args: argparse.Namespace, session: Session, prefix: str, out: str) -> int:
    if out == "-":
        raise UsageError("get -r writes files: -o takes a folder")
    prefix = folder_prefix(prefix)
    listing = [info async for info in session.client().list(prefix)]
    if not listing:
        nothing = NotFound("no files under this prefix", fatal=False)
        nothing.key = prefix
        raise nothing
    items: list[Planned] = []
    refused: list[Outcome] = []
    for info in listing:
        key = str(info.get("key"))
        size = info.get("size")
        try:
            target = local_target(out, prefix, key)
        except UnsafeKey as exc:
            refused.append(Outcome(Planned(key, "", None), error=exc))
            continue
        items.append(Planned(key, target, size if isinstance(size, int) else None))
    os.makedirs(out, exist_ok=True)
    bar = _bar(args, f"get {len(items)} files")
    per_file = _PerFile(args, "get", bar, len(items))
    batch = Batch(session.new_client, parallel=args.parallel, progress=bar, on_outcome=per_file)
    for outcome in refused:
        per_file(outcome)
    try:
        summary = await batch.get(items)
    finally:
        bar.finish()
    summary.files += len(refused)
    summary.failed += len(refused)
    summary.outcomes.extend(refused)
    return _summarize(args, "get", summary)


# -- batch output -------------------------------------------------------------


def _warn(args: argparse.Namespace, message: str, *, force: bool = False) -> None:
    if force or not args.quiet:
        print(f"valise: {message}", file=sys.stderr)


class _PerFile:
    """Called as each file of a batch finishes: its JSON line or its error, the bar's count."""

    def __init__(self, args: argparse.Namespace, verb: str, bar: ProgressBar, total: int) -> None:
        self.args = args
        self.verb = verb
        self.bar = bar
        self.total = total
        self.done = 0

    def __call__(self, o: Outcome) -> None:
        if o.ok:
            self.done += 1
            self.bar.label = f"{self.verb} {self.done}/{self.total} files"
            if self.args.json:
                print_json({**(o.info or {}), "path": o.item.path})
            return
        self.bar.clear()
        error = o.error
        if self.args.json:
            body = error_json(error)["error"] if error is not None else {}
            print_json({"key": o.item.key, "path": o.item.path, "error": body})
        elif isinstance(error, UnsafeKey):
            print(f"valise: refused {o.item.key!r}: {error}; not written", file=sys.stderr)
        elif o.tried:
            where = f" ({o.item.path})" if o.item.path else ""
            print(
                f"valise: {self.verb} {o.item.key}{where} failed: {_brief(error)}",
                file=sys.stderr,
            )


def _brief(error: BaseException | None) -> str:
    """An error without the key (the line already names it), with its hint."""
    if isinstance(error, ValiseError):
        text = f"{error.code}: {error.message}" if error.message else error.code
        return text + (f" (hint: {error.hint})" if error.hint else "")
    return describe(error) if error is not None else "unknown error"


def _summarize(
    args: argparse.Namespace, verb: str, summary: Summary, *, extra_failures: int = 0
) -> int:
    failures = [o for o in summary.outcomes if not o.ok]
    codes = {exit_code_for(o.error) for o in failures if o.error is not None}
    if extra_failures:
        codes.add(EXIT_ERROR)
    code = EXIT_OK if not codes else codes.pop() if len(codes) == 1 else EXIT_ERROR
    if args.json:
        print_json({"summary": {**summary.as_json(), "unreadable": extra_failures}})
    elif not args.quiet or code != EXIT_OK:
        rate = summary.bytes / max(summary.seconds, 1e-6) / 1e6
        line = (
            f"{verb}: {summary.done} of {summary.files + extra_failures} files, "
            f"{human_bytes(summary.bytes)} in {summary.seconds:.1f} s ({rate:.1f} MB/s)"
        )
        if summary.failed or extra_failures:
            line += f"; {summary.failed + extra_failures} failed"
        if summary.not_tried:
            stop = next((o.error for o in summary.outcomes if not o.tried), None)
            line += f"; {summary.not_tried} not tried (stopped: {_brief(stop)})"
        print(line, file=sys.stdout if code == EXIT_OK else sys.stderr)
    return code


# -- one-request commands -------------------------------------------------------


async def stat(args: argparse.Namespace, session: Session) -> int:
    info = await session.client().stat(args.key)
    if args.json:
        print_json(info)
    else:
        for name, value in info.items():
            shown = fmt_time(value) if name.endswith("_at") else value
            print(f"{name:>13}: {shown}")
    return EXIT_OK


async def rm(args: argparse.Namespace, session: Session) -> int:
    deleted = await session.client().delete(args.key)
    if args.json:
        print_json({"key": args.key, "deleted": deleted})
    if not deleted:
        if not args.quiet:
            print(f"valise: not found: {args.key}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if not args.quiet and not args.json:
        print(f"deleted {args.key}")
    return EXIT_OK


async def ls(args: argparse.Namespace, session: Session) -> int:
    async for info in session.client().list(args.prefix, args.limit):
        if args.json:
            print_json(info)
        else:
            size = human_bytes(info.get("size", 0))
            expires = fmt_time(info.get("expires_at"))
            print(f"{size:>10}  expires {expires}  {info.get('key')}")
    return EXIT_OK
