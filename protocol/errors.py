"""Protocol errors: every failure we report carries its wire code (docs/protocol.md section 4).

The server maps an exception to an ERROR frame by reading ``code``, ``fatal`` and
``extra``; it never needs an isinstance ladder. The decoder's contract: bad peer
input raises :class:`ProtocolError` and nothing else; any other exception is a bug.
"""

from __future__ import annotations

import enum
from typing import Any


class ErrorCode(enum.StrEnum):
    """Wire error codes, docs/protocol.md section 4."""

    #: Framing broken: unknown type, length over the limit, frame not allowed now.
    BAD_FRAME = "bad_frame"
    #: A control field is missing or has the wrong type.
    BAD_REQUEST = "bad_request"
    #: HELLO asked for a protocol version other than 1.
    BAD_VERSION = "bad_version"
    #: Key is empty, too long, not UTF-8 or holds control characters.
    BAD_KEY = "bad_key"
    #: GET offset beyond the end of the file.
    BAD_RANGE = "bad_range"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    #: A stored chunk is missing or does not match its recorded SHA-1.
    CORRUPT = "corrupt"
    #: Valkey is out of memory.
    STORAGE_FULL = "storage_full"
    #: Valkey is unreachable or too slow.
    UNAVAILABLE = "unavailable"
    BUSY = "busy"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"
    #: Another connection resumed this upload (revision 2, section 6.1).
    SUPERSEDED = "superseded"
    #: A create-only upload found a file under its key (revision 2, section 6.4).
    EXISTS = "exists"


class ProtocolError(Exception):
    """A failure the peer is told about in an ERROR frame.

    ``extra`` holds the additional fields docs/protocol.md names for some codes
    (``expected``/``actual`` for checksum_mismatch). Messages never contain
    file bytes.
    """

    def __init__(self, code: ErrorCode, message: str, *, fatal: bool, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        """The ERROR frame's JSON object."""
        return {"code": str(self.code), "message": self.message, "fatal": self.fatal, **self.extra}

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!s}, {self.message!r}, fatal={self.fatal})"


CHECKSUM_MESSAGE = "SHA-1 of the bytes received does not match END"


def checksum_mismatch(expected: str, actual: str) -> ProtocolError:
    """END's digest differs from the bytes received; the connection goes on."""
    return ProtocolError(
        ErrorCode.CHECKSUM_MISMATCH,
        CHECKSUM_MESSAGE,
        fatal=False,
        expected=expected,
        actual=actual,
    )


def bad_frame(message: str) -> ProtocolError:
    """A framing violation; always fatal (docs/protocol.md section 1)."""
    return ProtocolError(ErrorCode.BAD_FRAME, message, fatal=True)
