"""File info: what STAT, LIST, PUT and GET report about a stored version."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from protocol import compact_json
from storage.hashing import SHA1
from storage.keys import NamespaceKeys

#: Sets the one attribute a FileInfo's __init__ sets: its __dict__.
_set = object.__setattr__


@dataclass(frozen=True, init=False)
class FileInfo:
    """Frozen, compared and hashed by its fields, as dataclasses make it; but
    built by the __init__ below, which hands the instance its fields as one
    dict. The generated one of a frozen class calls ``object.__setattr__``
    per field: two FileInfos per small PUT+GET pair (the commit's, the
    read's) cost ~2 % of the pair's server instructions that way, a third
    of it this way. Hence also no ``slots``: a slotted instance has no dict
    to hand it."""

    key: str
    size: int
    sha1: str
    content_type: str | None
    chunk_size: int
    chunks: int
    created_at: float
    expires_at: float
    #: The stored version's id: names its chunks, and is the ``version`` clients
    #: see (docs/protocol.md section 6.2): random, new at every upload.
    vid: str
    #: Its chunks, digest list, SHA-1 and content type are sealed in Valkey
    #: (storage/crypto.py); kept in the stored info, never on the wire.
    encrypted: bool = False
    #: How its chunks are checked (storage/hashing.py): an info stored by an
    #: older server names none, and its chunks have SHA-1s. Never on the wire.
    check: str = SHA1

    def __init__(
        self,
        key: str,
        size: int,
        sha1: str,
        content_type: str | None,
        chunk_size: int,
        chunks: int,
        created_at: float,
        expires_at: float,
        vid: str,
        encrypted: bool = False,
        check: str = SHA1,
    ) -> None:
        # Every field above, in their order (tests/unit/storage/test_info.py checks).
        _set(
            self,
            "__dict__",
            {
                "key": key,
                "size": size,
                "sha1": sha1,
                "content_type": content_type,
                "chunk_size": chunk_size,
                "chunks": chunks,
                "created_at": created_at,
                "expires_at": expires_at,
                "vid": vid,
                "encrypted": encrypted,
                "check": check,
            },
        )

    def wire(self) -> dict[str, Any]:
        """The file info object of docs/protocol.md section 2 (PUT)."""
        return {
            "key": self.key,
            "size": self.size,
            "sha1": self.sha1,
            "content_type": self.content_type,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "version": self.vid,
        }

    def dumps(self) -> str:
        # Not dataclasses.asdict: it deep-copies, a tenth of a small PUT+GET's CPU.
        stored = self.wire()
        stored["vid"] = stored.pop("version")
        stored["check"] = self.check
        return compact_json.dumps_str(stored)


def commit_args(
    ns: NamespaceKeys, info: FileInfo, stored: str, ttl: int, if_absent: bool
) -> list[Any]:
    """The first eight ARGV of every commit script (storage/scripts.py); ``stored``
    is the info as Valkey keeps it (``Sealer.stored_forms``)."""
    return [
        stored,
        info.vid,
        ttl * 1000,
        info.key.encode(),
        int(info.expires_at * 1000),
        int(time.time() * 1000),
        ns.meta_prefix,
        "1" if if_absent else "0",
    ]
