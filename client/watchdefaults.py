"""The watch agent's defaults that ``valise --help`` prints: the excluded names
and the per-user state folder.

Apart from the agent's modules so that building the command line's parsers
imports nothing heavier than ``os`` (tests/unit/client/test_startup.py);
client/watchscan.py and client/watchstate.py say what each one is for.
"""

from __future__ import annotations

import os
import sys

__all__ = ["DEFAULT_EXCLUDES", "state_dir"]

#: Never scans: thumbnail and folder files, partial downloads and copies, editor swap files.
DEFAULT_EXCLUDES = (
    "Thumbs.db",
    "ehthumbs.db",
    "desktop.ini",
    ".DS_Store",
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "~$*",
    "*.swp",
)


def state_dir() -> str:
    """This user's folder for the agent's state, by the platform's convention."""
    home = os.path.expanduser("~")
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    elif sys.platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    else:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(base, "valise")
