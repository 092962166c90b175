"""Typed exceptions for the Valise client.

Server ERROR frames (docs/protocol.md section 4) become one exception class per wire
code, looked up in :data:`ERRORS_BY_CODE`; there is no isinstance ladder on the
way in. Failures the client detects itself (a download whose digest does not
match, a dropped connection, a server that speaks garbage) get their own codes,
which never appear on the wire.

Two families help callers (and the CLI's exit codes) decide what to do:

- :class:`IntegrityError`: the bytes are not what they should be
  (``checksum_mismatch``, ``size_mismatch``, ``corrupt``, or a client-side
  digest check). Retrying once may help; more than once never does.
- :class:`TransientError`: the server could not be reached or could not serve
  right now (``unavailable``, ``busy``, ``timeout``, ``shutting_down``,
  connection failures). Retrying later may help.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ._protocol import ErrorCode

__all__ = [
    "ERRORS_BY_CODE",
    "FEATURE_CODES",
    "BadFrame",
    "BadKey",
    "BadRange",
    "BadRequest",
    "BadVersion",
    "Busy",
    "ChecksumMismatch",
    "ConnectionFailed",
    "ConnectionLost",
    "Corrupt",
    "Exists",
    "Forbidden",
    "IntegrityError",
    "Internal",
    "NotFound",
    "ProtocolError",
    "RequestTimeout",
    "ShuttingDown",
    "SizeMismatch",
    "StorageFull",
    "Superseded",
    "Timeout",
    "TooLarge",
    "TransientError",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
    "ValiseError",
    "error_from_wire",
]


class ValiseError(Exception):
    """Base of every error raised by the client.

    ``code`` is the wire code (or a client-side code for errors the client
    detects itself), ``fatal`` says whether the connection it happened on is
    gone, and ``fields`` holds any extra fields of the ERROR payload (for
    ``checksum_mismatch``: ``expected`` and ``actual``). ``key`` is the key
    the request named, when it named one; ``hint`` is what a person can do
    about it (set a token, add TLS), when the client can tell; ``permanent``
    marks a failure that the same call would meet again (no retry).
    """

    #: Wire code this class stands for; instances may carry another one
    #: (an unknown code from a newer server falls back to this base class).
    default_code: ClassVar[str] = "error"
    #: Whether this error normally ends the connection.
    default_fatal: ClassVar[bool] = False

    def __init__(
        self,
        message: str = "",
        *,
        code: str | None = None,
        fatal: bool | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.code: str = code if code is not None else self.default_code
        self.message: str = message
        self.fatal: bool = fatal if fatal is not None else self.default_fatal
        self.fields: dict[str, Any] = dict(fields or {})
        self.key: str | None = None
        self.hint: str | None = None
        self.permanent = False
        #: A resumable upload this failure left open: ``AsyncClient.resume`` may finish it.
        self.upload_id: str | None = None
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.code]
        if self.key is not None:
            parts.append(self.key)
        if self.message:
            parts.append(self.message)
        return ": ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The error as one JSON object (``--json``); extra fields first, ours last."""
        out: dict[str, Any] = {**self.fields, "code": self.code, "message": self.message}
        for name in ("key", "hint"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"fatal={self.fatal!r})"
        )


class IntegrityError(ValiseError):
    """Bytes that do not match their SHA-1 or size.

    Raised as such when a download's END digest differs from the SHA-1 of the
    bytes received, the byte count differs from the announced length, or a
    whole-file digest differs from the stored ``sha1``. Every byte of such a
    download is to be treated as lost (a path destination is left untouched).
    """

    default_code = "integrity_error"


class TransientError(ValiseError):
    """The server could not be reached or could not serve now."""

    default_code = "transient"
    default_fatal = True


# Wire codes (docs/protocol.md section 4), named by client/_protocol.py, which
# is generated from the server's own list; a unit test checks every code has
# its class here. Fatality comes from the ERROR frame; the defaults only
# matter for errors built by hand.


class BadFrame(ValiseError):
    default_code = ErrorCode.BAD_FRAME
    default_fatal = True


class BadRequest(ValiseError):
    default_code = ErrorCode.BAD_REQUEST


class BadVersion(ValiseError):
    default_code = ErrorCode.BAD_VERSION
    default_fatal = True


class BadKey(ValiseError):
    default_code = ErrorCode.BAD_KEY


class BadRange(ValiseError):
    default_code = ErrorCode.BAD_RANGE


class Unauthorized(ValiseError):
    default_code = ErrorCode.UNAUTHORIZED
    default_fatal = True


class Forbidden(ValiseError):
    default_code = ErrorCode.FORBIDDEN


class NotFound(ValiseError):
    default_code = ErrorCode.NOT_FOUND


class TooLarge(ValiseError):
    default_code = ErrorCode.TOO_LARGE


class ChecksumMismatch(IntegrityError):
    """The server's SHA-1 of an upload differs from the END digest sent."""

    default_code = ErrorCode.CHECKSUM_MISMATCH


class SizeMismatch(IntegrityError):
    default_code = ErrorCode.SIZE_MISMATCH


class Corrupt(IntegrityError):
    """A stored chunk is missing or damaged: the whole download is lost."""

    default_code = ErrorCode.CORRUPT


class StorageFull(ValiseError):
    default_code = ErrorCode.STORAGE_FULL


class Unavailable(TransientError):
    default_code = ErrorCode.UNAVAILABLE
    default_fatal = False


class Busy(TransientError):
    default_code = ErrorCode.BUSY


class Timeout(TransientError):
    """The server timed the connection out (idle, or an upload too slow)."""

    default_code = ErrorCode.TIMEOUT


class ShuttingDown(TransientError):
    default_code = ErrorCode.SHUTTING_DOWN


class Internal(ValiseError):
    default_code = ErrorCode.INTERNAL


# Revision 2 codes the client knows before every server sends them (a server
# that lacks the feature never does): listed in docs/protocol.md section 4.


class Superseded(TransientError):
    """Another connection resumed this upload (docs/protocol.md section 6.1).

    Transient: the newest connection wins, and resuming again continues it."""

    default_code = ErrorCode.SUPERSEDED


class Exists(ValiseError):
    """A create-only (``if_absent``) upload found a file under its key (section 6.4).

    The upload was dropped and the stored file is unchanged.
    """

    default_code = ErrorCode.EXISTS
    default_fatal = False


# Client-side conditions, never on the wire.


class ConnectionFailed(TransientError):
    """Could not open a connection (refused, unreachable, DNS, TLS)."""

    default_code = "connect_failed"


class ConnectionLost(TransientError):
    """The connection dropped before the reply was complete."""

    default_code = "connection_lost"


class RequestTimeout(TransientError):
    """No progress from the server within the client's timeout."""

    default_code = "client_timeout"


class Unsupported(ValiseError):
    """The call needs a feature this server does not announce in HELLO (docs/protocol.md 6).

    Raised before anything is sent: a server without the feature would ignore
    the field (an ``if_absent`` upload would replace the file).
    """

    default_code = "unsupported"


class ProtocolError(ValiseError):
    """The server sent something docs/protocol.md does not allow."""

    default_code = "protocol_error"
    default_fatal = True


#: Wire code -> exception class (docs/protocol.md section 4).
ERRORS_BY_CODE: dict[str, type[ValiseError]] = {
    cls.default_code: cls
    for cls in (
        BadFrame,
        BadRequest,
        BadVersion,
        BadKey,
        BadRange,
        Unauthorized,
        Forbidden,
        NotFound,
        TooLarge,
        ChecksumMismatch,
        SizeMismatch,
        Corrupt,
        StorageFull,
        Unavailable,
        Busy,
        Timeout,
        ShuttingDown,
        Internal,
        Exists,
        Superseded,
    )
}

#: Codes of docs/protocol.md section 4 that belong to a revision 2 feature.
FEATURE_CODES = frozenset({Exists.default_code, Superseded.default_code})


def error_from_wire(body: Mapping[str, Any]) -> ValiseError:
    """Build the exception for an ERROR payload.

    Unknown codes (a newer server) give a plain :class:`ValiseError` carrying
    that code. A missing or ill-typed ``fatal`` is read as fatal: when in
    doubt, reconnect.
    """
    code = body.get("code")
    message = body.get("message")
    fatal = body.get("fatal")
    code_s = code if isinstance(code, str) and code else "unknown"
    cls = ERRORS_BY_CODE.get(code_s, ValiseError)
    fields = {k: v for k, v in body.items() if k not in ("code", "message", "fatal")}
    return cls(
        message if isinstance(message, str) else "",
        code=code_s,
        fatal=fatal if isinstance(fatal, bool) else True,
        fields=fields,
    )
