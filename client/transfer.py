"""One upload or one download on a connection (docs/protocol.md section 2, PUT and GET).

No retries here (see :meth:`client.aio.AsyncClient._call`): each function is
one attempt, reading its source or writing its sink from the first byte.
Memory stays at one DATA frame.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Callable, Optional

from .connection import Connection
from .errors import ConnectionLost, IntegrityError, ProtocolError, RequestTimeout, Unsupported
from .files import Sink, Source
from .wire import FrameType, encode_data, encode_end

__all__ = [
    "Progress",
    "download",
    "features",
    "put_request",
    "require_feature",
    "send_body",
    "upload",
    "verify_download",
]

#: Progress callback: ``(bytes_done, bytes_total_or_None)``.
Progress = Callable[[int, Optional[int]], None]  # a run-time alias: typing's, for 3.8

#: How long to wait for the ERROR that explains a connection dropped mid-upload.
_ERROR_GRACE = 2.0


def features(conn: Connection) -> frozenset[str]:
    """The revision 2 features the server of ``conn`` announced in HELLO (none without HELLO)."""
    listed = (conn.hello_reply or {}).get("features")
    if not isinstance(listed, list):
        return frozenset()
    return frozenset(f for f in listed if isinstance(f, str))


def require_feature(conn: Connection, feature: str, why: str) -> None:
    """Raise :class:`Unsupported` unless the server offers ``feature`` (docs/protocol.md 6)."""
    if feature not in features(conn):
        said = "did not say HELLO" if conn.hello_reply is None else "does not offer it"
        raise Unsupported(f"{why} needs the server's {feature!r} feature, and this server {said}")


def put_request(
    key: str,
    ttl: int | None,
    content_type: str | None,
    declared: int | None,
    *,
    if_absent: bool = False,
    resumable: bool = False,
) -> dict[str, Any]:
    """The PUT body: only the fields that are set (docs/protocol.md section 2, 6.1, 6.4)."""
    body: dict[str, Any] = {"key": key}
    if declared is not None:
        body["size"] = declared
    if ttl is not None:
        body["ttl"] = ttl
    if content_type is not None:
        body["content_type"] = content_type
    if if_absent:
        body["if_absent"] = True
    if resumable:
        body["resumable"] = True
    return body


async def upload(
    conn: Connection,
    key: str,
    src: Source,
    ttl: int | None,
    content_type: str | None,
    size: int | None,
    progress: Progress | None,
    if_absent: bool = False,
) -> dict[str, Any]:
    """PUT, DATA*, END(sha1); returns the stored file info or raises the ERROR."""
    _, declared = await begin_upload(conn, key, src, ttl, content_type, size, progress, if_absent)
    return await send_body(conn, src, hashlib.sha1(), 0, declared, progress)


async def begin_upload(
    conn: Connection,
    key: str,
    src: Source,
    ttl: int | None,
    content_type: str | None,
    size: int | None,
    progress: Progress | None,
    if_absent: bool = False,
    *,
    resumable: bool = False,
) -> tuple[dict[str, Any], int | None]:
    """PUT, and the server's acceptance; (its reply, the size declared). ``src`` is at
    its start, ready for :func:`send_body`.

    ``if_absent``: a create-only upload (docs/protocol.md section 6.4), sent
    only to a server that offers it; elsewhere the field would be ignored
    and the file replaced, so :class:`Unsupported` is raised before the PUT.
    """
    if if_absent:
        require_feature(conn, "if_absent", "a create-only upload (no clobber)")
    known = src.start()
    declared = size if size is not None else known
    body = put_request(key, ttl, content_type, declared, if_absent=if_absent, resumable=resumable)
    await conn.send_control(FrameType.PUT, body)
    # Wait for the acceptance before streaming: a refused PUT then costs
    # one round trip instead of a file's worth of discarded DATA.
    reply = await conn.read_reply()
    if progress is not None:
        progress(0, declared)
    return reply, declared


async def send_body(
    conn: Connection,
    src: Source,
    sha1: Any,
    sent: int,
    declared: int | None,
    progress: Progress | None,
) -> dict[str, Any]:
    """DATA frames from ``src``'s position to its end, END(``sha1``), then the reply.

    ``sha1`` already holds the ``sent`` bytes before that position (a resumed
    upload hashes what the server kept before it streams the rest), so END
    carries the digest of the whole file (docs/protocol.md section 6.1).
    """
    # The server may send a fatal ERROR at any moment of the upload
    # (too_large, timeout, storage failure): a watcher reads it while we send.
    watcher = asyncio.create_task(conn.read_frame(wait_forever=True))
    try:
        ended = False
        try:
            while not watcher.done():
                chunk = src.read(conn.max_frame_out)
                if not chunk:
                    src.ended.append((src.attempt, sha1.hexdigest(), sent))
                    await conn.send(encode_end(sha1.digest()))
                    ended = True
                    break
                sha1.update(chunk)
                await conn.send(encode_data(chunk))
                sent += len(chunk)
                if progress is not None:
                    progress(sent, declared)
        except ConnectionLost:
            # The server may have said why before it closed: prefer its ERROR.
            await asyncio.wait({watcher}, timeout=_ERROR_GRACE)
            if not watcher.done() or watcher.exception() is not None:
                raise
        done, _ = await asyncio.wait({watcher}, timeout=conn.timeout)
        if not done:
            raise RequestTimeout(f"no reply to END within {conn.timeout} s")
        reply = conn.reply_of(watcher.result())  # raises for ERROR
        if not ended:
            raise ProtocolError("server replied OK before the upload's END")
        return reply
    finally:
        if not watcher.done():
            watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def download(
    conn: Connection, body: dict[str, Any], sink: Sink, progress: Progress | None
) -> dict[str, Any]:
    """GET into ``sink``, verified before it is committed; returns the OK info."""
    await conn.send_control(FrameType.GET, body)
    info = await conn.read_reply()
    expected = reply_length(info)
    sink.start()
    if progress is not None:
        progress(0, expected)
    done = 0

    def take(payload: memoryview) -> None:
        nonlocal done
        sink.write(payload)
        done += len(payload)
        if progress is not None:
            progress(done, expected)

    received, actual, digest = await receive(conn, expected, take)
    verify_download(info, body, received, expected, actual, digest)
    sink.commit()
    return info


def reply_length(reply: dict[str, Any]) -> int:
    """A GET reply's ``length``: the bytes its DATA frames will carry."""
    value = reply.get("length")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("GET reply without an integer 'length'")
    return value


async def receive(
    conn: Connection, expected: int, take: Callable[[memoryview], None], sha1: Any = None
) -> tuple[int, bytes, bytes]:
    """A GET's DATA frames until END, each handed to ``take``.

    Returns the bytes received, their SHA-1 (fed into ``sha1`` when given, a
    running hash the caller keeps) and the digest END carried. An ERROR ends
    the stream (raised here: every byte of it is lost).
    """
    sha1 = hashlib.sha1() if sha1 is None else sha1
    received = 0
    while True:
        frame = await conn.read_data()
        if isinstance(frame, memoryview):
            # A DATA payload, borrowed from the receive buffer: used up before the next read.
            received += len(frame)
            if received > expected:
                raise ProtocolError(f"server sent more than the {expected} bytes announced")
            sha1.update(frame)
            take(frame)
        elif frame.type is FrameType.END:
            return received, sha1.digest(), frame.digest()
        else:
            conn.reply_of(frame)
            raise ProtocolError(f"unexpected {frame.type.name} inside a download")


def verify_download(
    info: dict[str, Any],
    request: dict[str, Any],
    received: int,
    expected: int,
    actual: bytes,
    digest: bytes,
) -> None:
    """docs/protocol.md section 2, GET: length bytes, END their SHA-1 (whole file: stored sha1)."""
    fields = {"expected": digest.hex(), "actual": actual.hex(), "received": received}
    if received != expected:
        raise IntegrityError(f"download ended after {received} of {expected} bytes", fields=fields)
    if actual != digest:
        raise IntegrityError("SHA-1 of the bytes received does not match END", fields=fields)
    whole = request.get("offset", 0) == 0 and received == info.get("size")
    stored = info.get("sha1")
    if whole and isinstance(stored, str) and stored.lower() != digest.hex():
        fields["stored"] = stored
        raise IntegrityError("whole-file SHA-1 differs from the stored sha1", fields=fields)
