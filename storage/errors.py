"""Storage errors. Each carries the wire code the server reports (docs/protocol.md section 4).

Every valkey-py exception becomes one of these ``from exc``; valkey's own
exceptions never leave storage/. Whether the ERROR is fatal depends on where
the server is in the conversation, so it is not decided here.
"""

from __future__ import annotations

from protocol.errors import CHECKSUM_MESSAGE, ErrorCode


class StorageError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, **extra: str) -> None:
        super().__init__(message)
        self.message = message
        #: Further fields of the ERROR frame (docs/protocol.md section 4).
        self.extra = extra


class StorageFull(StorageError):
    """Valkey refused a write: it is at maxmemory with noeviction."""

    code = ErrorCode.STORAGE_FULL


class StorageUnavailable(StorageError):
    """Valkey is unreachable or did not answer within the storage timeout."""

    code = ErrorCode.UNAVAILABLE


class PasswordRefused(StorageUnavailable):
    """Valkey refused our credentials (WRONGPASS, NOAUTH): not worth a retry."""


class FileExists(StorageError):
    """A create-only upload found a file under its key; nothing was published."""

    code = ErrorCode.EXISTS


class FileNotFound(StorageError):
    code = ErrorCode.NOT_FOUND


class BadRange(StorageError):
    code = ErrorCode.BAD_RANGE


class ChecksumMismatch(StorageError):
    """The upload's bytes do not hash to the digest its END carried; nothing was published."""

    code = ErrorCode.CHECKSUM_MISMATCH

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(CHECKSUM_MESSAGE, expected=expected, actual=actual)


class Corrupt(StorageError):
    """A chunk of a live file is missing or does not match its recorded checksum."""

    code = ErrorCode.CORRUPT


class MisconfiguredValkey(Exception):
    """The Valkey we were pointed at would lose or persist data; refuse to start."""


class Superseded(StorageError):
    """A RESUME elsewhere took this resumable upload over (docs/protocol.md section 6.1)."""

    code = ErrorCode.SUPERSEDED


class TooManyUploads(StorageError):
    """The namespace already holds --max-resumable open resumable uploads."""

    code = ErrorCode.BUSY
