"""Log lines an operator can ship: ``--log-format text`` (for people) or ``json``.

JSON is one object per line for every logger, with ``time`` (RFC 3339, UTC),
``level``, ``logger`` and ``message``; an access record's fields are the
object's own fields instead of a message. What reaches a line is decided
where it is logged (never a key name unless ``--log-keys``, never file bytes
or secrets): the format changes only the spelling.
"""

from __future__ import annotations

import asyncio
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


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines of one event-loop pass written together, in one write.

    Under load every request's access record was a write to stderr of its
    own. Info lines are kept until the loop has run what it had ready, then
    written at once; a warning or worse (and anything logged without a
    running loop) goes out at once, after the lines before it. flush(), which
    logging calls at exit, writes what is kept: nothing is lost.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lines: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()
            return
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        lines, self._lines = "".join(self._lines), []
        self.acquire()
        try:
            self.stream.write(lines)
            self.stream.flush()
        except Exception:
            pass  # stderr closed: nowhere to say so
        finally:
            self.release()


def configure(level: str, log_format: str, *, workers: int = 1) -> None:
    """Every logger of the process to stderr, in ``log_format``."""
    handler = BatchingHandler()
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
