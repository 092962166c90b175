"""Storage errors. Each carries the wire code the server reports (PROTOCOL.md section 4).

Every valkey-py exception becomes one of these ``from exc``; valkey's own
exceptions never leave storage/. Whether the ERROR is fatal depends on where
the server is in the conversation, so it is not decided here.
"""

from __future__ import annotations

from protocol.errors import ErrorCode


class StorageError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StorageFull(StorageError):
    """Valkey refused a write: it is at maxmemory with noeviction."""

    code = ErrorCode.STORAGE_FULL


class StorageUnavailable(StorageError):
    """Valkey is unreachable or did not answer within the storage timeout."""

    code = ErrorCode.UNAVAILABLE


class FileNotFound(StorageError):
    code = ErrorCode.NOT_FOUND


class BadRange(StorageError):
    code = ErrorCode.BAD_RANGE


class Corrupt(StorageError):
    """A chunk of a live file is missing or does not match its recorded SHA-1."""

    code = ErrorCode.CORRUPT


class MisconfiguredValkey(Exception):
    """The Valkey we were pointed at would lose or persist data; refuse to start."""
