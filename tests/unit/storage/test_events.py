"""storage/events.py without Valkey: entry ids, and the events as the scripts store them."""

from __future__ import annotations

import json

import pytest

from storage.events import (
    Record,
    deleted_event_head,
    event_payload,
    parse_id,
    stored_event,
)
from storage.info import FileInfo

INFO = FileInfo(
    key='scans/"ü"/t1.nii',
    size=3,
    sha1="a9993e364706816aba3e25717850c26c9cd0d89d",
    content_type=None,
    chunk_size=8,
    chunks=1,
    created_at=1.5,
    expires_at=2.5,
    vid="0123abcd",
)


@pytest.mark.parametrize(
    ("text", "order"),
    [
        ("1-0", (1, 0)),
        ("1796289229149-12", (1796289229149, 12)),
        ("18446744073709551615-18446744073709551615", (2**64 - 1, 2**64 - 1)),
    ],
)
def test_entry_ids_order_like_the_stream(text: str, order: tuple[int, int]) -> None:
    assert parse_id(text) == order


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "1-",
        "-1",
        "1-0-0",
        "a-0",
        "1-x",
        " 1-0",
        "\u0661-\u0660",
        "18446744073709551616-0",
        "+",
        "$",
    ],
)
def test_anything_else_is_not_an_id(text: str) -> None:
    assert parse_id(text) is None


def test_ids_compare_by_time_then_sequence() -> None:
    ids = ["10-2", "9-5", "10-10", "100-0"]
    assert sorted(ids, key=lambda i: parse_id(i) or (0, 0)) == ["9-5", "10-2", "10-10", "100-0"]


def test_a_stored_event_is_the_file_info() -> None:
    record = Record("5-1", INFO.key.encode(), stored_event(INFO).encode())
    assert json.loads(event_payload(record)) == {"id": "5-1", "event": "stored", **INFO.wire()}
    assert record.order == (5, 1)


def test_a_deleted_event_is_closed_by_the_script_with_its_version() -> None:
    # DELETE appends the version it removed and '"}' (storage/scripts.py).
    stored = deleted_event_head(INFO.key) + INFO.vid + '"}'
    payload = event_payload(Record("7-0", INFO.key.encode(), stored.encode()))
    assert json.loads(payload) == {
        "id": "7-0",
        "event": "deleted",
        "key": INFO.key,
        "version": INFO.vid,
    }
