"""Log lines an operator can ship: ``--log-format text`` (for people) or ``json``.

JSON is one object per line for every logger, with ``time`` (RFC 3339, UTC),
``level``, ``logger`` and ``message``; an access record's fields are the
object's own fields instead of a message. What reaches a line is decided
where it is logged (never a key name unless ``--log-keys``, never file bytes
or secrets): the format changes only the spelling.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

#: --log-format choices.
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def __init__(self, *, pid: bool = False) -> None:
        super().__init__()
        self.pid = pid

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self.pid:
            line["pid"] = record.process
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            # The record's own float "time" would hide the RFC 3339 one.
            line.update((k, v) for k, v in fields.items() if k != "time")
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), ensure_ascii=False)


def configure(level: str, log_format: str, *, workers: int = 1) -> None:
    """Every logger of the process to stderr, in ``log_format``."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(pid=workers > 1))
    else:
        # Several workers log to one stderr: say which one.
        pid = "[%(process)d]" if workers > 1 else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{pid}: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
