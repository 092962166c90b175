"""Valise client: a standard-library-only library and CLI for the Valise wire protocol.

This folder can be vendored as is. ``Client`` blocks, ``AsyncClient`` is for
asyncio; both stream files in frames, verify SHA-1 both ways and retry what
is safe to retry. ``python -m client --help`` for the command line.
"""

from __future__ import annotations

from .aio import AsyncClient
from .errors import (
    ERRORS_BY_CODE,
    BadFrame,
    BadKey,
    BadRange,
    BadRequest,
    BadVersion,
    Busy,
    ChecksumMismatch,
    ConnectionFailed,
    ConnectionLost,
    Corrupt,
    Forbidden,
    IntegrityError,
    Internal,
    NotFound,
    ProtocolError,
    RequestTimeout,
    ShuttingDown,
    SizeMismatch,
    StorageFull,
    Timeout,
    TooLarge,
    TransientError,
    Unauthorized,
    Unavailable,
    ValiseError,
    error_from_wire,
)
from .sync import Client

__all__ = [
    "ERRORS_BY_CODE",
    "AsyncClient",
    "BadFrame",
    "BadKey",
    "BadRange",
    "BadRequest",
    "BadVersion",
    "Busy",
    "ChecksumMismatch",
    "Client",
    "ConnectionFailed",
    "ConnectionLost",
    "Corrupt",
    "Forbidden",
    "IntegrityError",
    "Internal",
    "NotFound",
    "ProtocolError",
    "RequestTimeout",
    "ShuttingDown",
    "SizeMismatch",
    "StorageFull",
    "Timeout",
    "TooLarge",
    "TransientError",
    "Unauthorized",
    "Unavailable",
    "ValiseError",
    "error_from_wire",
]
