"""File info: what STAT, LIST, PUT and GET report about a stored version."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FileInfo:
    key: str
    size: int
    sha1: str
    content_type: str | None
    chunk_size: int
    chunks: int
    created_at: float
    expires_at: float
    #: The stored version's id: names its chunks. Never sent to clients.
    vid: str

    def wire(self) -> dict[str, Any]:
        """The file info object of PROTOCOL.md section 2 (PUT)."""
        out = asdict(self)
        del out["vid"]
        return out

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def loads(cls, raw: bytes | str) -> FileInfo:
        return cls(**json.loads(raw))
