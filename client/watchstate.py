"""What ``watch`` has sent: a JSON state file in a per-user folder, rewritten atomically.

The state lives with the user, not in the watched folder: a scanner's export
folder may be read-only to the agent, is often a network share, and is no
place for a file that lists patients' keys. The default folder follows each
platform's rule for application state:

- Linux and other Unix: ``$XDG_STATE_HOME/valise``, else ``~/.local/state/valise``;
- macOS: ``~/Library/Application Support/valise``;
- Windows: ``%LOCALAPPDATA%\\valise``.

One file per watched folder and server (a hash of both in its name), so two
agents that send one folder to two servers keep separate records. Older
versions kept ``DIR/.valise-sent.json``: when the new file does not exist
yet, its records are taken over once (read only), so an upgrade resends
nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

from .files import fsync_dir
from .watchdefaults import state_dir

__all__ = ["LEGACY_NAME", "SentRecord", "StateFile", "default_state_path", "state_dir"]

#: Where versions before the per-user folder kept the state: inside the watched folder.
LEGACY_NAME = ".valise-sent.json"
_VERSION = 1


def default_state_path(root: str, host: str, port: int) -> str:
    """``<state_dir>/watch-<folder name>-<hash of folder and server>.json``."""
    real = os.path.realpath(root)
    digest = hashlib.sha256(f"{real}\n{host}:{port}".encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(real) or "root")[:40]
    return os.path.join(state_dir(), f"watch-{name}-{digest}.json")


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

    def __init__(self, path: str, log: Callable[[str], None], *, legacy: str | None = None) -> None:
        self.path = os.path.abspath(path)
        self.legacy = legacy
        self.records: dict[str, SentRecord] = {}
        self._log = log

    def load(self) -> None:
        source = self.path
        if not os.path.exists(source) and self.legacy and os.path.isfile(self.legacy):
            source = self.legacy
        self.records = self._read(source)
        if source != self.path and self.records:
            self._log(
                f"took over {len(self.records)} records from {source} (the old default); "
                "that file is no longer used"
            )

    def _read(self, path: str) -> dict[str, SentRecord]:
        try:
            with open(path, "rb") as fh:
                raw = json.loads(fh.read().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self._log(f"warning: ignoring unreadable state file {path}: {exc}")
            return {}
        files = raw.get("files") if isinstance(raw, dict) else None
        if not isinstance(files, dict):
            self._log(f"warning: ignoring malformed state file {path}")
            return {}
        records = {}
        for rel, value in files.items():
            record = SentRecord.from_json(value)
            if record is not None and isinstance(rel, str):
                records[rel] = record
        return records

    def save(self) -> None:
        """Write the whole state to a temporary file, fsync it, rename it into place."""
        directory, base = os.path.split(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)  # the mode is ignored on Windows
        body = {
            "version": _VERSION,
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
