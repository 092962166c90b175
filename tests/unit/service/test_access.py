"""service/access.py: one line per request, the same whether or not logging makes it."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.access import AccessLog, log
from service.logs import BatchingHandler, JsonFormatter, TextFormatter, sole_handler

#: Namespaces and key names a peer may send: quotes, backslashes, controls, non-ASCII.
ODD = [
    "plain",
    'say "hi"',
    "back\\slash",
    "tab\tnew\nline\r\x00\x1f\x7f",
    "Zoë Müller/脳スキャン.nii",
    "emoji \U0001f9e0 and \u2028 \ud800",
    "",
]


@contextmanager
def alone(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """The access logger writing alone to a StringIO, as configure() sets it up.

    Entered in the test itself: pytest adds its capturing handler to loggers
    that do not propagate when a test's phase begins.
    """
    saved = (log.handlers[:], log.propagate, log.level)
    out = io.StringIO()
    handler = BatchingHandler()
    handler.setStream(out)
    handler.setFormatter(formatter)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        yield out
    finally:
        log.handlers[:], log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])


def lines_both_ways(
    formatter: logging.Formatter, monkeypatch: pytest.MonkeyPatch, **fields: Any
) -> tuple[str, str]:
    """One record written directly, then the same through logging (someone else listens)."""
    with alone(formatter) as stream:
        return both_ways(stream, monkeypatch, **fields)


def both_ways(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch, **fields: Any
) -> tuple[str, str]:
    monkeypatch.setattr(time, "time", lambda: 1_764_770_741.9876)
    monkeypatch.setattr(time, "monotonic", lambda: 100.0)
    access = AccessLog(log_keys=True)
    assert sole_handler(log) is not None
    access.record(started=99.98765, **fields)
    other = logging.NullHandler()
    log.addHandler(other)
    try:
        assert sole_handler(log) is None
        access.record(started=99.98765, **fields)
    finally:
        log.removeHandler(other)
    direct, through_logging = stream.getvalue().split("\n")[:-1]  # JSON may hold U+2028
    return direct, through_logging


@pytest.mark.parametrize("odd", ODD)
def test_text_lines_carry_json_that_parses_back(monkeypatch: pytest.MonkeyPatch, odd: str) -> None:
    fields = dict(peer="127.0.0.1:4", namespace=odd, op="put", key=odd, nbytes=7, outcome="ok")
    direct, through_logging = lines_both_ways(TextFormatter(), monkeypatch, **fields)
    assert direct == through_logging
    assert direct.isascii()  # json.dumps' default: escaped, as it always was
    entry = json.loads(direct.split(" valise.access: ", 1)[1])
    assert entry["namespace"] == odd and entry["key"] == odd
    assert entry["ms"] == 12.35 and entry["bytes"] == 7 and entry["time"] == 1_764_770_741.988


@pytest.mark.parametrize("odd", ODD)
def test_json_lines_parse_back(monkeypatch: pytest.MonkeyPatch, odd: str) -> None:
    fields = dict(peer=odd, namespace=odd, op="get", key=odd, nbytes=0, outcome="not_found")
    direct, through_logging = lines_both_ways(JsonFormatter(pid=True), monkeypatch, **fields)
    assert direct == through_logging
    line = json.loads(direct)
    assert line["namespace"] == odd and line["key"] == odd and line["peer"] == odd
    assert line["level"] == "info" and line["logger"] == "valise.access"
    assert line["time"] == "2025-12-03T14:05:41.987+00:00"


def test_keys_are_hashed_unless_log_keys() -> None:
    access = AccessLog()
    with alone(TextFormatter()) as stream:
        for _ in range(2):
            access.record(
                peer="p", namespace="n", op="put", key="Jane Roe", nbytes=1, started=0, outcome="ok"
            )
        access.record(
            peer="p", namespace="n", op="stat", key=None, nbytes=0, started=0, outcome="ok"
        )
    text = stream.getvalue()
    assert "Jane" not in text
    keys = [json.loads(line.split(": ", 1)[1])["key"] for line in text.splitlines()]
    assert keys[0] == keys[1] and keys[0].startswith("h:") and keys[2] is None


def test_above_info_nothing_is_written() -> None:
    with alone(TextFormatter()) as stream:
        log.setLevel(logging.WARNING)
        AccessLog().record(
            peer="p", namespace="n", op="put", key="k", nbytes=1, started=0, outcome="ok"
        )
    assert stream.getvalue() == ""


@given(st.lists(st.text(), min_size=1, max_size=20))
def test_key_refs_are_hmac_sha256_with_the_processs_secret(keys: list[str]) -> None:
    access = AccessLog()
    for key in keys + ODD:
        digest = hmac.new(access._secret, key.encode("utf-8", "replace"), hashlib.sha256)
        assert access.key_ref(key) == "h:" + digest.hexdigest()[:16]
    other = AccessLog()
    assert other.key_ref(keys[0]) != access.key_ref(keys[0])  # a secret of its own
