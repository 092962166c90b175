"""Which files of the watched folder are candidates: the scan and the include/exclude globs.

Scanner exports fill up with files that are not scans: Windows' thumbnail
caches, macOS's folder files, the temporary names copy tools write to before
a rename. They are excluded by default (:data:`DEFAULT_EXCLUDES`, and every
dotfile and dot-folder); ``--exclude`` adds patterns, ``--include`` keeps
only what matches, ``--no-default-excludes`` drops the defaults.

A pattern is a shell glob (``*``, ``?``, ``[abc]``) matched without regard
to case (exports mix ``IMG.DCM`` and ``img.dcm``): against the file name,
or, when it holds a ``/``, against the path relative to the watched folder.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from .watchdefaults import DEFAULT_EXCLUDES

__all__ = ["DEFAULT_EXCLUDES", "Filters", "Seen", "scan"]


class Filters:
    """Include and exclude globs; :meth:`excluded` says why a path is left out, or None."""

    def __init__(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        *,
        defaults: bool = True,
    ) -> None:
        self.include = [p.lower() for p in include]
        self.exclude = [p.lower() for p in (*(DEFAULT_EXCLUDES if defaults else ()), *exclude)]

    @staticmethod
    def _matches(rel: str, pattern: str) -> bool:
        target = rel if "/" in pattern else rel.rpartition("/")[2]
        return fnmatch.fnmatchcase(target, pattern)

    def excluded(self, rel: str) -> str | None:
        """``rel`` uses ``/``; the reason it is not a candidate, or None."""
        low = rel.lower()
        for pattern in self.exclude:
            if self._matches(low, pattern):
                return "excluded"
        if self.include and not any(self._matches(low, p) for p in self.include):
            return "not included"
        return None


@dataclass(frozen=True)
class Seen:
    """One regular file found by a scan."""

    rel: str  #: relative path, '/' separators
    path: str  #: absolute path
    size: int
    mtime_ns: int


def scan(
    root: str, skip: Callable[[str], bool], on_left_out: Callable[[str, str], None]
) -> Iterator[Seen]:
    """Regular files under ``root`` in a stable order.

    Dotfiles, dot-folders and ``skip(path)`` are passed over silently;
    ``on_left_out(rel, reason)`` hears of other files that are not regular.
    """
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
            if skip(os.path.abspath(entry.path)):
                continue
            rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
            if not stat.S_ISREG(st.st_mode):
                on_left_out(rel, "not a regular file")
                continue
            yield Seen(rel, os.path.abspath(entry.path), st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))
