"""service/logs.py: JSON lines, and lines batched per event-loop pass without loss."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime

from service.logs import BatchingHandler, JsonFormatter


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
