"""client/events.py without a server: what `valise events` prints for each item."""

from __future__ import annotations

import asyncio
import json

from client.errors import ConnectionLost
from client.events import EventStream, Gap, _line
from client.wire import SERVER_FRAMES, FrameType

STORED = {
    "id": "1796289229149-0",
    "event": "stored",
    "key": "scans/ü.dcm",
    "size": 5,
    "sha1": "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d",
    "version": "2bf1",
}
DELETED = {"id": "1796289229153-0", "event": "deleted", "key": "scans/ü.dcm", "version": "2bf1"}


def test_one_line_per_event_for_people() -> None:
    assert _line(STORED, as_json=False) == (
        "1796289229149-0  stored  scans/ü.dcm  5 bytes  "
        "sha1 aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
    )
    assert _line(DELETED, as_json=False) == "1796289229153-0  deleted  scans/ü.dcm  version 2bf1"


def test_json_lines_are_the_events_as_sent() -> None:
    assert json.loads(_line(STORED, as_json=True)) == STORED
    assert json.loads(_line(Gap("5-0"), as_json=True)) == {"event": "gap", "cursor": "5-0"}
    assert "valise ls" in _line(Gap(None), as_json=False)


def test_event_frames_come_from_servers() -> None:
    assert FrameType.EVENT in SERVER_FRAMES


def test_a_day_long_outage_waits_at_the_cap_and_never_overflows() -> None:
    heard: list[float] = []
    stream = EventStream(
        "127.0.0.1", 1, backoff=0.2, max_backoff=0.001, on_retry=lambda e, d: heard.append(d)
    )
    # About 4,000 failed reconnects at the cap: 2.0 ** 4000 would raise OverflowError.
    asyncio.run(stream.pause(ConnectionLost("gone"), 4_000))
    assert len(heard) == 1 and 0.0005 <= heard[0] <= 0.001
