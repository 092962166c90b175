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
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring, encode_basestring_ascii

#: --log-format choices.
FORMATS = ("text", "json")


#: The logger of access records (service/access.py).
ACCESS = "valise.access"

#: Milliseconds as formatTime() spells them.
_MILLIS = tuple(f"{n:03d}" for n in range(1000))


#: printf spellings of rounded()'s digits: no format spec built per call.
_FIXED = {digits: f"%.{digits}f" for digits in range(10)}


def rounded(value: float, digits: int) -> str:
    """``repr(round(value, digits))``, as json.dumps spells it, in one float conversion.

    Both round correctly to ``digits`` places; below 1e12 the shortest repr
    of the rounded float is that decimal without its trailing zeros.
    """
    if not 0 <= value < 1e12:
        return repr(round(value, digits))
    text = (_FIXED[digits] % value).rstrip("0")
    return text + "0" if text[-1] == "." else text


class _Pid:
    """This process's id, read again in a forked worker only."""

    def __init__(self) -> None:
        self.value = os.getpid()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.value = os.getpid()


_pid = _Pid()


def _json(text: str | None, encode: Callable[[str], str]) -> str:
    return "null" if text is None else encode(text)


class _AccessLines:
    """What format() makes of an access record, without the record: the line's head
    is the format's (``_head``), its fields the same JSON in both (ASCII-escaped in
    text, as json.dumps does by default; not in JSON lines, as JsonFormatter's)."""

    _ascii = False

    def access_line(
        self,
        now: float,
        peer: str,
        namespace: str,
        op: str,
        key: str | None,
        nbytes: int,
        ms: float,
        outcome: str,
    ) -> str:
        """AccessLog's record created at ``now``; ``ms`` comes unrounded."""
        e = encode_basestring_ascii if self._ascii else encode_basestring
        return (
            f'{self._head(now)}"peer":{e(peer)},"namespace":{e(namespace)},'
            f'"op":{e(op)},"key":{_json(key, e)},"bytes":{nbytes},"ms":{rounded(ms, 2)},'
            f'"outcome":{e(outcome)}}}'
        )

    def _head(self, now: float) -> str:
        raise NotImplementedError


class TextFormatter(_AccessLines, logging.Formatter):
    """``time level logger: message``; access records are written by access_line()."""

    _ascii = True

    def __init__(self, *, pid: bool = False) -> None:
        # Several workers log to one stderr: say which one.
        super().__init__(
            f"%(asctime)s %(levelname)s %(name)s{'[%(process)d]' if pid else ''}: %(message)s"
        )
        self.pid = pid
        self._second = -1
        self._stamp = ""

    def _head(self, now: float) -> str:
        """``time INFO valise.access: {"time":...,``: formatTime()'s stamp, made once a
        second; the message is json.dumps() of the entry (ASCII, no spaces)."""
        second = int(now)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(now))
            self._second = second
        msecs = _MILLIS[int((now - second) * 1000)]
        pid = f"[{_pid.value}]" if self.pid else ""
        return f'{self._stamp},{msecs} INFO {ACCESS}{pid}: {{"time":{rounded(now, 3)},'


class JsonFormatter(_AccessLines, logging.Formatter):
    def __init__(self, *, pid: bool = False) -> None:
        super().__init__()
        self.pid = pid
        self._second = -1.0
        self._stamp = ""

    def _head(self, now: float) -> str:
        """``{"time":"<RFC 3339>","level":"info","logger":"valise.access",``, the stamp
        made once a second."""
        # datetime.fromtimestamp's rounding: to the nearest microsecond, half to even.
        fraction, second = math.modf(now)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            second += 1
            micros -= 1_000_000
        if second != self._second:
            self._stamp = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
            self._second = second
        pid = f',"pid":{_pid.value}' if self.pid else ""
        return (
            f'{{"time":"{self._stamp}.{_MILLIS[micros // 1000]}+00:00","level":"info",'
            f'"logger":"{ACCESS}"{pid},'
        )

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
        self._later()

    def add_line(self, line: str) -> None:
        """An info line already formatted: what emit() does after format()."""
        self._lines.append(line + self.terminator)
        self._later()

    def _later(self) -> None:
        """Write the kept lines once the loop has run what it had ready (at once
        without a running loop)."""
        if self._scheduled:
            return
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
        # Taken before it is joined: a line added meanwhile, from any thread, is
        # in the list joined or in the new one.
        kept = self._lines
        self._lines = []
        lines = "".join(kept)
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
        handler.setFormatter(TextFormatter(pid=workers > 1))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def sole_handler(
    logger: logging.Logger,
) -> tuple[BatchingHandler, TextFormatter | JsonFormatter] | None:
    """The handler that alone would write ``logger``'s info records, if configure()'s.

    None whenever anything else could see or change a record on its way: a
    filter, another handler on the way up (pytest's caplog adds one), a
    disabled logger, a handler level above info, another formatter. Then the
    record must go through logging itself.
    """
    if logger.disabled or logger.filters:
        return None
    handlers: list[logging.Handler] = []
    node: logging.Logger | None = logger
    while node is not None:
        handlers += node.handlers
        node = node.parent if node.propagate else None
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    formatter = handler.formatter
    if (
        type(handler) is BatchingHandler
        and not handler.filters
        and handler.level <= logging.INFO
        and (type(formatter) is TextFormatter or type(formatter) is JsonFormatter)
    ):
        return handler, formatter
    return None
