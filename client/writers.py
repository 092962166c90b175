"""Is another program still writing this file? Asked of the operating system where it can tell.

A scanner may pause in the middle of a file for longer than any settle time
(it waits for the next slice, a network share stalls). Whether the writer
still holds the file open is a better signal than time:

- Linux: every process's open files are under ``/proc/PID/fd``, and
  ``/proc/PID/fdinfo/FD`` gives the open mode. A file some other process
  opened for writing (``O_WRONLY`` or ``O_RDWR``) is held. Processes of
  other users are visible to root only; an agent running as the scanner
  software's user, or as root, sees them.
- Windows: a program writing a file normally denies other writers, so an
  open that allows only readers to share (``FILE_SHARE_READ``) fails with a
  sharing violation while it holds the file.
- Elsewhere (macOS, BSD): the system offers no cheap, unprivileged way;
  :func:`held_for_writing` returns None and the other signals decide.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

__all__ = ["can_tell", "held_for_writing"]

_O_ACCMODE = 0o3
_WRITE_MODES = (0o1, 0o2)  # O_WRONLY, O_RDWR


def can_tell() -> bool:
    """Whether this system can say which files are open for writing."""
    return sys.platform == "win32" or os.path.isdir("/proc/self/fdinfo")


def held_for_writing(paths: Iterable[str]) -> set[str] | None:
    """The ``paths`` another process has open for writing; None when the OS cannot tell."""
    wanted = list(paths)
    if not wanted:
        return set()
    if sys.platform == "win32":
        return {path for path in wanted if _windows_held(path)}
    if os.path.isdir("/proc/self/fdinfo"):
        return _linux_held(wanted)
    return None


def _linux_held(paths: list[str]) -> set[str]:
    by_target = {os.path.realpath(path): path for path in paths}
    held: set[str] = set()
    me = os.getpid()
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return held
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's without privileges
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            path = by_target.get(target)
            if path is not None and path not in held and _writing(pid, fd):
                held.add(path)
    return held


def _writing(pid: int, fd: str) -> bool:
    """Whether descriptor ``fd`` of ``pid`` was opened for writing (gone: no)."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & _O_ACCMODE in _WRITE_MODES
    except (OSError, ValueError, IndexError):
        return False
    return False


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _CreateFileW = _kernel32.CreateFileW
    _CreateFileW.argtypes = [
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.LPVOID,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.HANDLE,
    ]
    _CreateFileW.restype = wintypes.HANDLE
    _CloseHandle = _kernel32.CloseHandle
    _CloseHandle.argtypes = [wintypes.HANDLE]
    _INVALID = wintypes.HANDLE(-1).value
    _GENERIC_READ = 0x80000000
    _FILE_SHARE_READ = 0x1
    _OPEN_EXISTING = 3
    _SHARING_VIOLATIONS = (32, 33)  # ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION

    def _windows_held(path: str) -> bool:
        handle = _CreateFileW(path, _GENERIC_READ, _FILE_SHARE_READ, None, _OPEN_EXISTING, 0, None)
        if handle == _INVALID:
            return ctypes.get_last_error() in _SHARING_VIOLATIONS
        _CloseHandle(handle)
        return False

else:

    def _windows_held(path: str) -> bool:
        return False
