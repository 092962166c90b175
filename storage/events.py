"""Change events as Valkey keeps them: one stream per namespace (``valise:{ns=NS}:ev``).

The commit and delete scripts append each event in the same step as the
change (:mod:`storage.scripts`); this module writes nothing. It reads the
stream back: the latest id, a range for a replay, and blocking reads
(``XREAD BLOCK``) for a server's one follower per namespace. The blocking
reads get a client of their own (:func:`storage.clients.reader_client`), so
a follower waiting on a quiet namespace never holds a connection of the
pool that serves requests (docs/decisions/0011-change-events.md).

An entry holds ``k``, the file key, so a server filters by prefix without
decoding JSON, and ``e``, the event as JSON without its ``id``: the id is the
entry's, and :func:`event_payload` splices it in front. An encrypted
version's ``stored`` event holds its SHA-1 and content type only sealed, as
its stored info does (the same ``sealed`` part; docs/decisions/0012): the
log opens it as it reads the entry back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from protocol import compact_json
from storage import keys
from storage.calls import VALKEY_ERRORS, translate
from storage.clients import reader_client
from storage.config import StorageConfig
from storage.crypto import Sealer
from storage.errors import StorageError, StorageUnavailable
from storage.info import FileInfo

log = logging.getLogger("valise.storage")

T = TypeVar("T")


class Store(Protocol):
    """What the event log needs of the Store (named here: no import of store.py)."""

    client: Any
    config: StorageConfig
    sealer: Sealer

    async def run(
        self, op: Callable[[], Awaitable[T]], *, idempotent: bool, kind: str = ...
    ) -> T: ...


#: The stream's ``MAXLEN ~``: the most events one namespace keeps, whatever
#: the retention. At ~400 bytes an event, about 40 MiB of Valkey at most.
MAXLEN = 100_000
#: Entries one range or blocking read returns at most.
READ_COUNT = 512
#: Milliseconds one XREAD BLOCK waits before the follower asks again.
BLOCK_MS = 5000

#: An entry id, ``<ms>-<seq>``, as a pair that sorts like the stream does.
Order = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One stream entry: its id, the file key, the event JSON without ``id``."""

    id: str
    key: bytes
    event: bytes

    @property
    def order(self) -> Order:
        order = parse_id(self.id)
        assert order is not None, "Valkey handed out a malformed entry id"
        return order


def parse_id(text: str) -> Order | None:
    """The order of an entry id, or None when ``text`` is not one.

    Ids are opaque to clients (docs/protocol.md section 6.3); the server
    compares them to join a replay and the live events without a seam.
    """
    ms, dash, seq = text.partition("-")
    if not dash or not (ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii()):
        return None
    order = int(ms), int(seq)
    return order if order[0] < 2**64 and order[1] < 2**64 else None


def stored_event(info: FileInfo, sealed: str | None = None) -> str:
    """The ``stored`` event of a commit: the file info, as every reply carries it;
    with ``sealed`` (an encrypted version's), its SHA-1 and content type sealed."""
    event: dict[str, Any] = {"event": "stored", **info.wire()}
    if sealed is not None:
        del event["sha1"], event["content_type"]
        event["sealed"] = sealed
    return compact_json.dumps_str(event)


def opened_event(sealer: Sealer, namespace: str, event: bytes) -> bytes:
    """A stored event as clients see it: its sealed part, if any, opened.

    One that cannot be opened (its key is not loaded, or it was altered)
    still goes out, with ``sha1`` and ``content_type`` null: the change did
    happen, and a GET of the file then says why it cannot be served.
    """
    if b'"sealed":' not in event:
        return event
    fields = json.loads(event)
    sealed = fields.pop("sealed", None)
    if sealed is None:
        return event
    clear = {name: fields[name] for name in ("key", "size", "chunk_size", "chunks")}
    info = FileInfo(
        sha1="",
        content_type=None,
        created_at=fields["created_at"],
        expires_at=fields["expires_at"],
        vid=fields["version"],
        **clear,
    )
    sha1: str | None
    try:
        sha1, content_type = sealer.open_info(namespace, info, sealed)
    except StorageError as exc:
        log.warning("a change event's sealed part could not be opened: %s", exc.message)
        sha1 = content_type = None
    opened = {"event": "stored", **info.wire(), "sha1": sha1, "content_type": content_type}
    return json.dumps(opened, separators=(",", ":"), ensure_ascii=False).encode()


def deleted_event_head(key: str) -> str:
    """The ``deleted`` event up to its version; the delete script adds the version
    it removed and the closing ``"}``."""
    quoted = json.dumps(key, ensure_ascii=False)
    return f'{{"event":"deleted","key":{quoted},"version":"'


def event_payload(record: Record) -> bytes:
    """The EVENT frame's JSON: ``id`` first, then the stored event's fields."""
    return b'{"id":"' + record.id.encode() + b'",' + record.event[1:]


def _records(entries: Sequence[Any], sealer: Sealer, namespace: str) -> list[Record]:
    out = []
    for entry_id, fields in entries:
        ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        out.append(Record(ident, fields[b"k"], opened_event(sealer, namespace, fields[b"e"])))
    return out


class EventLog:
    """Reads of the event streams, through the Store's client (and a reader client)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._reader: Any = None
        self._closed = False

    def publish_args(self, event: str) -> list[Any]:
        """The last three ARGV of a script that publishes (storage.scripts)."""
        return [event, self.store.config.event_retention * 1000, MAXLEN]

    async def latest(self, namespace: str) -> str | None:
        """The id of the namespace's most recent event kept, or None."""
        stream = keys.NamespaceKeys(namespace).events
        client = self.store.client
        entries = await self.store.run(
            lambda: client.xrevrange(stream, "+", "-", count=1), idempotent=True
        )
        if not entries:
            return None
        ident = entries[0][0]
        return ident.decode() if isinstance(ident, bytes) else str(ident)

    async def range(self, namespace: str, start: str, end: str, count: int) -> list[Record]:
        """Up to ``count`` events from ``start`` to ``end`` (ids; ``(`` before an id
        excludes it, ``+`` is the end of the stream), oldest first."""
        stream = keys.NamespaceKeys(namespace).events
        client = self.store.client
        entries = await self.store.run(
            lambda: client.xrange(stream, start, end, count=count), idempotent=True
        )
        return _records(entries, self.store.sealer, namespace)

    async def follow(self, namespace: str, after: str, count: int = READ_COUNT) -> list[Record]:
        """The events after id ``after``, waiting up to BLOCK_MS for one; maybe none.

        On a connection of the reader client: one per follower at a time.
        """
        if self._closed:
            # A follower still running after close() must not open a new reader:
            # nothing would close its connections.
            raise StorageUnavailable("the event log is closed: the server is stopping")
        if self._reader is None:
            self._reader = reader_client(self.store.config, BLOCK_MS / 1000)
        stream = keys.NamespaceKeys(namespace).events
        try:
            reply = await self._reader.xread({stream: after}, count=count, block=BLOCK_MS)
        except VALKEY_ERRORS as exc:
            raise translate(exc) from exc
        # [[stream, entries]], or nothing when BLOCK_MS passed without an event.
        return _records(reply[0][1], self.store.sealer, namespace) if reply else []

    async def close(self) -> None:
        """Close the reader, ending any XREAD BLOCK in flight; no new one opens after.

        Safe to call again once the followers have stopped: a cluster client
        closed while it was still connecting finishes connecting after the
        close, and only a second close reaches those connections.
        """
        self._closed = True
        if self._reader is not None:
            await self._reader.aclose()
