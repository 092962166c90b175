"""Unit tests for client/aio.py: retries and LIST paging on a scripted connection, no socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from client import errors
from client.aio import AsyncClient
from client.connection import Connection
from client.wire import FrameType


class ScriptedConnection:
    """Stands in for Connection: each read_reply() pops the next scripted outcome."""

    def __init__(self, script: Iterator[dict[str, Any] | errors.ValiseError]) -> None:
        self.script = script
        self.closed = False
        self.hello_reply: dict[str, Any] | None = {"max_frame": 1 << 20}
        self.sent: list[tuple[FrameType, Any]] = []

    async def send_control(self, ftype: FrameType, body: Any) -> None:
        self.sent.append((ftype, body))

    async def read_reply(self) -> dict[str, Any]:
        outcome = next(self.script)
        if isinstance(outcome, errors.ValiseError):
            raise outcome
        return outcome

    def abort(self) -> None:
        self.closed = True


def _client(
    monkeypatch: pytest.MonkeyPatch, outcomes: list[dict[str, Any] | errors.ValiseError]
) -> tuple[AsyncClient, list[ScriptedConnection]]:
    script = iter(outcomes)
    conns: list[ScriptedConnection] = []
    client = AsyncClient(retries=3, backoff=0.0)

    async def connection() -> Connection:
        if conns and not conns[-1].closed:
            return conns[-1]  # type: ignore[return-value]
        conns.append(ScriptedConnection(script))
        return conns[-1]  # type: ignore[return-value]

    monkeypatch.setattr(client, "_connection", connection)
    return client, conns


def test_retry_transient_then_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = errors.Busy("full", fatal=True)
    client, conns = _client(monkeypatch, [busy, errors.Unavailable("slow"), {"x": 1}])
    assert asyncio.run(client.stat("k")) == {"x": 1}
    # Fatal busy dropped the first connection; non-fatal unavailable kept the second.
    assert [c.closed for c in conns] == [True, False]


def test_no_retry_for_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    client, conns = _client(monkeypatch, [errors.NotFound("gone", fatal=False), {"x": 1}])
    with pytest.raises(errors.NotFound):
        asyncio.run(client.stat("k"))
    assert len(conns) == 1
    assert not conns[0].closed


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    client, conns = _client(monkeypatch, [errors.ConnectionLost("x") for _ in range(10)])
    with pytest.raises(errors.ConnectionLost):
        asyncio.run(client.stat("k"))
    assert len(conns) == 4  # one try and three retries, each on a new connection


def test_list_follows_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    pages: list[dict[str, Any] | errors.ValiseError] = [
        {"files": [{"key": "a"}], "cursor": "a"},
        {"files": [], "cursor": "b"},
        {"files": [{"key": "c"}, {"key": "d"}], "cursor": None},
    ]
    client, conns = _client(monkeypatch, pages)

    async def collect() -> list[str]:
        return [info["key"] async for info in client.list("p", limit=2)]

    assert asyncio.run(collect()) == ["a", "c", "d"]
    bodies = [body for _, body in conns[0].sent]
    assert bodies == [
        {"prefix": "p", "limit": 2},
        {"prefix": "p", "cursor": "a", "limit": 2},
        {"prefix": "p", "cursor": "b", "limit": 2},
    ]


def test_create_only_upload_is_refused_by_a_server_without_the_feature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No 'if_absent' in HELLO's features: the field would be ignored and the
    # file replaced, so nothing at all is sent (docs/protocol.md section 6.4).
    client, conns = _client(monkeypatch, [])
    with pytest.raises(errors.Unsupported, match="'if_absent' feature"):
        asyncio.run(client.put("k", b"scan", if_absent=True))
    assert conns[0].sent == []


def test_exists_after_a_lost_reply_is_our_own_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    # Attempt 1 sends END and loses the reply; attempt 2 meets `exists`. The
    # stored file has the SHA-1 and size attempt 1 sent: it is ours.
    sha1 = "a" * 40
    client, _ = _client(monkeypatch, [{"key": "k", "sha1": sha1, "size": 4}])
    attempts: list[bool] = []

    async def upload(conn: Any, key: str, src: Any, *args: Any) -> dict[str, Any]:
        src.start()
        attempts.append(args[-1])  # if_absent
        if len(attempts) == 1:
            src.ended.append((src.attempt, sha1, 4))
            raise errors.ConnectionLost("reply lost")
        raise errors.Exists("a file is there", fatal=False)

    monkeypatch.setattr("client.resumable.upload", upload)
    assert asyncio.run(client.put("k", b"scan", if_absent=True))["sha1"] == sha1
    assert attempts == [True, True]


def test_exists_with_other_bytes_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = _client(monkeypatch, [{"key": "k", "sha1": "b" * 40, "size": 4}])

    async def upload(conn: Any, key: str, src: Any, *args: Any) -> dict[str, Any]:
        src.start()
        if src.attempt == 1:
            src.ended.append((src.attempt, "a" * 40, 4))
            raise errors.ConnectionLost("reply lost")
        raise errors.Exists("a file is there", fatal=False)

    monkeypatch.setattr("client.resumable.upload", upload)
    with pytest.raises(errors.Exists):
        asyncio.run(client.put("k", b"scan", if_absent=True))


def test_a_permanent_failure_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # A TLS mismatch is a ConnectionFailed (transient) that every retry would meet again.
    mismatch = errors.ConnectionFailed("wrong version number")
    mismatch.permanent = True
    client, conns = _client(monkeypatch, [mismatch, {"x": 1}])
    with pytest.raises(errors.ConnectionFailed):
        asyncio.run(client.stat("k"))
    assert len(conns) == 1
