"""Local files <-> keys for whole studies: what ``put -r`` sends and where ``get -r`` writes.

``put``: files and directories become ``(key, path)`` pairs; a directory's
files get ``PREFIX + path relative to it`` with ``/`` separators on every
platform, so a study uploaded from Windows and one uploaded from Linux have
the same keys.

``get -r``: a key is text someone else chose. Before a byte is written, the
part of each key after the prefix must be a plain relative path: no ``..``,
no absolute path, no backslash, no drive letter or ``:`` (Windows streams),
no control characters, no empty or ``.`` part, and on Windows no device
name (``CON``, ``NUL``, ``COM1``...) and no part ending in a dot or a space
(Windows drops those, so two keys would land on one file). The resolved
path must still be inside the output folder once symbolic links are
followed. Anything else is refused, with the reason, and never written.

A PREFIX names a folder of keys: a missing trailing ``/`` is added, so
``patients/1234`` never takes in ``patients/12345/...``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = [
    "Planned",
    "PutPlan",
    "UnsafeKey",
    "folder_prefix",
    "local_target",
    "plan_put",
    "unsafe_reason",
]

_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)
_WINDOWS_FORBIDDEN = frozenset('<>"|?*')


class UnsafeKey(ValueError):
    """A key that cannot be written under the output folder as it stands."""


@dataclass(frozen=True)
class Planned:
    """What one file of a batch is: its key, its local path, its size when known."""

    key: str
    path: str
    size: int | None = None


def folder_prefix(prefix: str) -> str:
    """``PREFIX`` as a folder of keys: ``""`` stays, anything else ends with ``/``."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


@dataclass
class PutPlan:
    """``put [-r] SOURCE... PREFIX`` worked out: what goes, what is left, what failed."""

    files: list[Planned]
    #: (path, why): not regular files, symbolic links to directories. Not failures.
    skipped: list[tuple[str, str]]
    #: (path, error): folders or files that could not be read. Failures.
    unreadable: list[tuple[str, OSError]]


def plan_put(sources: Sequence[str], prefix: str, *, recursive: bool) -> PutPlan:
    """The files to send for ``put [-r] SOURCE... PREFIX``.

    A file is sent as ``PREFIX + its name``; with ``recursive``, a directory
    contributes every regular file below it as ``PREFIX + relative path``.
    Raises ``ValueError`` (a usage error) for a missing source, a directory
    without ``recursive``, and two files that would get the same key.
    """
    prefix = folder_prefix(prefix)
    plan = PutPlan([], [], [])
    planned, skipped = plan.files, plan.skipped
    for source in sources:
        try:
            st = os.stat(source)
        except OSError as exc:
            raise ValueError(f"cannot read {source}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise ValueError(f"{source} is a directory: use put -r {source} PREFIX")
            planned.extend(_walk(source, prefix, plan))
        elif stat.S_ISREG(st.st_mode):
            name = os.path.basename(os.path.normpath(source))
            planned.append(Planned(prefix + name, source, st.st_size))
        else:
            skipped.append((source, "not a regular file"))
    seen: dict[str, str] = {}
    for item in planned:
        if item.key in seen:
            raise ValueError(f"{seen[item.key]} and {item.path} would both be {item.key!r}")
        seen[item.key] = item.path
    return plan


def _walk(root: str, prefix: str, plan: PutPlan) -> Iterable[Planned]:
    """Regular files under ``root``, sorted; symbolic links to directories are not followed."""

    def unreadable(exc: OSError) -> None:
        plan.unreadable.append((str(exc.filename), exc))

    for directory, dirs, files in os.walk(root, onerror=unreadable):
        dirs.sort()
        for name in list(dirs):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                plan.skipped.append((path, "symbolic link to a directory (not followed)"))
                dirs.remove(name)
        for name in sorted(files):
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError as exc:
                plan.unreadable.append((path, exc))
                continue
            if not stat.S_ISREG(st.st_mode):
                plan.skipped.append((path, "not a regular file"))
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            yield Planned(prefix + rel, path, st.st_size)


def unsafe_reason(rel: str, *, windows: bool = os.name == "nt") -> str | None:
    """Why ``rel`` (a key without its prefix) is not a safe relative path, or None."""
    if not rel:
        return "nothing after the prefix"
    if rel.startswith("/"):
        return "absolute path"
    if "\\" in rel:
        return "backslash in the key"
    if ":" in rel:
        return "':' in the key (drive letter or Windows stream)"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in rel):
        return "control character in the key"
    for part in rel.split("/"):
        if part in ("", "."):
            return "empty or '.' path part"
        if part == "..":
            return "'..' in the key"
        if windows:
            if part.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
                return f"{part!r} is a Windows device name"
            if part[-1] in ". ":
                return f"{part!r} ends with a dot or a space"
            if _WINDOWS_FORBIDDEN & set(part):
                return f"{part!r} holds a character Windows does not allow"
    return None


def local_target(out_dir: str, prefix: str, key: str) -> str:
    """Where ``get -r`` writes ``key``: inside ``out_dir``, or :class:`UnsafeKey`."""
    if not key.startswith(prefix):
        raise UnsafeKey("not under the prefix")
    rel = key[len(prefix) :]
    reason = unsafe_reason(rel)
    if reason is not None:
        raise UnsafeKey(reason)
    base = os.path.realpath(out_dir)
    target = os.path.join(out_dir, *rel.split("/"))
    resolved = os.path.realpath(target)
    if os.path.commonpath([base, resolved]) != base or resolved == base:
        raise UnsafeKey("leads outside the output folder (symbolic link)")
    return target
