"""storage/events.py without Valkey: entry ids, and the events as the scripts store them."""

from __future__ import annotations

import dataclasses
import json

import pytest

from storage.crypto import Keyring, Sealer
from storage.events import (
    Record,
    deleted_event_head,
    event_payload,
    opened_event,
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


def test_an_encrypted_stored_event_holds_no_sha1_nor_content_type_until_opened() -> None:
    sealer = Sealer(Keyring([("k1", bytes(range(32)))]))
    info = dataclasses.replace(INFO, content_type="application/dicom", encrypted=True)
    _, sealed = sealer.stored_forms("ns", info)
    stored = stored_event(info, sealed)
    assert info.sha1 not in stored and "dicom" not in stored
    opened = opened_event(sealer, "ns", stored.encode())
    payload = event_payload(Record("5-1", info.key.encode(), opened))
    assert json.loads(payload) == {"id": "5-1", "event": "stored", **info.wire()}
    # Another namespace's, or no key loaded: the change is told, its sealed fields null.
    for reader, namespace in ((sealer, "other"), (Sealer(), "ns")):
        told = json.loads(opened_event(reader, namespace, stored.encode()))
        assert told == {"event": "stored", **info.wire(), "sha1": None, "content_type": None}
    assert opened_event(sealer, "ns", stored_event(INFO).encode()) == stored_event(INFO).encode()
