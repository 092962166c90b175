"""service/logs.py: JSON lines, and lines batched per event-loop pass without loss."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import time
from datetime import datetime

import pytest

from service.logs import BatchingHandler, JsonFormatter, TextFormatter, rounded


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler_logger(name: str) -> tuple[logging.Logger, CountingStream, BatchingHandler]:
    stream = CountingStream()
    handler = BatchingHandler()
    handler.setStream(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream, handler


def test_lines_of_one_loop_pass_are_one_write_in_order() -> None:
    logger, stream, _ = handler_logger("test.batch")

    async def main() -> int:
        for n in range(3):
            logger.info("line %d", n)
        assert stream.writes == 0  # held until the loop has run what it had ready
        logger.warning("a warning")  # goes out at once, after the lines before it
        after_warning = stream.writes
        logger.info("after")
        await asyncio.sleep(0)
        return after_warning

    assert asyncio.run(main()) == 1
    assert stream.writes == 2
    assert stream.getvalue().splitlines() == [
        "INFO line 0",
        "INFO line 1",
        "INFO line 2",
        "WARNING a warning",
        "INFO after",
    ]


def test_without_a_loop_and_at_flush_nothing_is_kept() -> None:
    logger, stream, handler = handler_logger("test.batch2")
    logger.info("no loop")
    assert stream.getvalue() == "INFO no loop\n"

    async def main() -> None:
        logger.info("then exit")
        handler.flush()  # what logging.shutdown() does at exit

    asyncio.run(main())
    assert stream.getvalue().endswith("INFO then exit\n")


def test_json_lines_take_an_access_records_fields() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("valise.access", logging.INFO, __file__, 1, "{...}", None, None)
    record.access = {"time": 1.5, "op": "put", "key": "h:0123"}
    line = json.loads(formatter.format(record))
    assert line["op"] == "put" and line["key"] == "h:0123"
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None  # not the float
    assert "message" not in line
    plain = logging.LogRecord("valise", logging.WARNING, __file__, 1, "Valkey %s", ("down",), None)
    assert json.loads(formatter.format(plain))["message"] == "Valkey down"


#: Times where rounding to milliseconds or microseconds carries into the next second.
AWKWARD_TIMES = [1_764_770_741.0, 1_764_770_741.9995, 1_764_770_741.9999996, 1_764_770_741.0005]


def made_at(now: float, monkeypatch: pytest.MonkeyPatch, message: str) -> logging.LogRecord:
    """A record logging creates at ``now``, as AccessLog's fallback makes it."""
    fields = json.loads(message)
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: now)
        record = logging.LogRecord("valise.access", logging.INFO, __file__, 1, message, None, None)
    record.access = fields
    return record


@pytest.mark.parametrize(
    "formatter",
    [TextFormatter(), TextFormatter(pid=True), JsonFormatter(), JsonFormatter(pid=True)],
)
@pytest.mark.parametrize("now", AWKWARD_TIMES + [1_764_770_741.123456 + n / 7 for n in range(40)])
def test_access_lines_are_what_format_makes_of_the_record(
    formatter: TextFormatter | JsonFormatter, now: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = ("10.0.0.1:5", "ns", "put", "h:0123456789abcdef", 12, 3.25, "ok")
    message = (
        f'{{"time":{round(now, 3)!r},"peer":"10.0.0.1:5","namespace":"ns","op":"put",'
        '"key":"h:0123456789abcdef","bytes":12,"ms":3.25,"outcome":"ok"}'
    )
    expected = formatter.format(made_at(now, monkeypatch, message))
    assert formatter.access_line(now, *fields) == expected
    formatter.access_line(now + 1, *fields)  # a second stamp of its own, not a stale one
    assert formatter.access_line(now, *fields) == expected


def test_rounded_is_how_json_spells_a_rounded_float() -> None:
    rng = random.Random(21)
    values = [0.0, 0.001, 0.005, 0.015, 0.125, 2.675, 1e-9, 99.995, 1e12, -1.5, 1e20]
    values += [rng.uniform(0, 10) ** rng.uniform(0, 4) for _ in range(20_000)]
    values += [rng.uniform(1.7e9, 1.8e9) for _ in range(20_000)]
    for digits in (2, 3):
        for value in values:
            assert rounded(value, digits) == json.dumps(round(value, digits)), value
