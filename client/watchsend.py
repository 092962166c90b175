"""One upload of a scanner's file by ``watch``: the bytes read once, hashed, checked after.

The file is opened read-only and must still have the size and mtime the
scan saw; exactly that many bytes are sent, hashed on the way. The server's
``sha1`` and ``size`` must equal ours, and the file must not have changed
during the upload (:class:`ChangedWhileSending` otherwise: it goes again
once complete).

A create-only upload (``if_absent``, docs/protocol.md section 6.4) that meets
``exists`` looks at what the key holds: the same SHA-1 and size mean this
file is already there (sent before a state file was lost, or by a twin
agent), :class:`AlreadyThere`; anything else is another file that is not
replaced, :class:`Taken`.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import IO

from .aio import AsyncClient
from .errors import Exists, IntegrityError, NotFound
from .watchscan import Seen
from .watchstate import SentRecord

__all__ = ["AlreadyThere", "ChangedWhileSending", "HashingReader", "Taken", "send_file"]


class HashingReader:
    """A binary stream over the file that hashes what it hands out, up to ``limit`` bytes.

    It seeks back to its start only (a resumed upload reads the file again
    from byte 0 to hash what the server kept): then the hash starts over,
    so it is always the hash of the bytes from the start.
    """

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        self._fh = fh
        self._origin = fh.tell()
        self._limit = limit
        self.remaining = limit
        self.sha1 = hashlib.sha1()
        self.count = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.count

    def seek(self, offset: int, whence: int = 0, /) -> int:
        if (offset, whence) != (0, 0):
            raise OSError("a HashingReader seeks back to its start only")
        self._fh.seek(self._origin)
        self.remaining = self._limit
        self.sha1 = hashlib.sha1()
        self.count = 0
        return 0

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > self.remaining:
            size = self.remaining
        data = self._fh.read(size) if size else b""
        self.remaining -= len(data)
        self.count += len(data)
        self.sha1.update(data)
        return data


class ChangedWhileSending(Exception):
    """The file's size or mtime changed during its upload."""


class AlreadyThere(Exception):
    """A create-only upload met ``exists`` and the stored file is this one: nothing to send."""

    def __init__(self, record: SentRecord) -> None:
        super().__init__(record.key)
        self.record = record


class Taken(Exception):
    """A create-only upload met ``exists`` and the stored file is another one: not replaced."""


def _open_unchanged(seen: Seen) -> IO[bytes]:
    """Open read-only; raise :class:`ChangedWhileSending` unless it is still as seen."""
    fh = open(seen.path, "rb")  # noqa: SIM115 - the caller closes it
    try:
        st = os.fstat(fh.fileno())
    except BaseException:
        fh.close()
        raise
    if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
        fh.close()
        raise ChangedWhileSending
    return fh


async def send_file(
    client: AsyncClient,
    seen: Seen,
    key: str,
    *,
    ttl: int | None,
    create_only: bool,
    upload_id: str | None = None,
) -> SentRecord:
    """Upload ``seen`` as ``key``; what to record, or one of this module's exceptions.

    ``upload_id``: a resumable upload of this very file that an earlier pass
    left open (the link stayed down past the client's retries): it goes on
    from the server's offset, or, when it is gone, a fresh upload starts.
    """
    with _open_unchanged(seen) as fh:
        reader = HashingReader(fh, seen.size)
        try:
            try:
                if upload_id is None:
                    raise NotFound("no upload to resume")
                info = await client.resume(upload_id, reader)
            except NotFound:
                info = await client.put(
                    key, reader, ttl=ttl, size=seen.size, if_absent=create_only, resumable=None
                )
        except Exists:
            raise await _existing(client, seen, key, fh) from None
        after = os.fstat(fh.fileno())
    local = reader.sha1.hexdigest()
    if reader.count != seen.size or (after.st_size, after.st_mtime_ns) != (
        seen.size,
        seen.mtime_ns,
    ):
        raise ChangedWhileSending
    remote = info.get("sha1")
    if not isinstance(remote, str) or remote.lower() != local or info.get("size") != seen.size:
        raise IntegrityError(
            "the server's sha1/size differ from what was sent",
            fields={"expected": local, "actual": remote},
        )
    return SentRecord(seen.rel, seen.size, seen.mtime_ns, local, key, time.time())


async def _existing(client: AsyncClient, seen: Seen, key: str, fh: IO[bytes]) -> Exception:
    """What ``exists`` means for ``seen``: the same bytes already there, or another file."""
    info = await client.stat(key)
    fh.seek(0)
    reader = HashingReader(fh, seen.size)
    while reader.read(1 << 20):
        pass
    local = reader.sha1.hexdigest()
    if info.get("sha1") == local and info.get("size") == seen.size:
        return AlreadyThere(SentRecord(seen.rel, seen.size, seen.mtime_ns, local, key, time.time()))
    return Taken(f"sha1 {info.get('sha1')}, {info.get('size')} bytes")
