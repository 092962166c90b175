"""Our errors as HTTP statuses: one table, one JSON body (docs/http.md section 2).

Every failure the store or the operations raise carries its wire code
(docs/protocol.md section 4); the HTTP door reads ``code`` and ``message``
(and ``extra``: ``expected``/``actual`` of a checksum mismatch) and never the
binary door's notion of fatality. A few answers exist only in HTTP (405,
422, a failed ``If-Match``): :class:`HttpError` carries their status itself.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from protocol.errors import ErrorCode

#: Code -> status. Codes that never reach a client over HTTP (bad_version is
#: HELLO's) still have a row: a code without one is answered 500.
STATUS: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_KEY: 400,
    ErrorCode.BAD_FRAME: 400,
    ErrorCode.BAD_VERSION: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CHECKSUM_MISMATCH: 409,
    ErrorCode.SIZE_MISMATCH: 409,
    ErrorCode.EXISTS: 412,
    # Another connection resumed the upload (tus: a newer PATCH took it over).
    ErrorCode.SUPERSEDED: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.BAD_RANGE: 416,
    ErrorCode.STORAGE_FULL: 507,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BUSY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.TIMEOUT: 408,
    ErrorCode.INTERNAL: 500,
    ErrorCode.CORRUPT: 500,
}

REASONS: dict[int, bytes] = {
    100: b"Continue",
    200: b"OK",
    201: b"Created",
    204: b"No Content",
    206: b"Partial Content",
    304: b"Not Modified",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
    431: b"Request Header Fields Too Large",
    460: b"Checksum Mismatch",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    507: b"Insufficient Storage",
}


class WireError(Protocol):
    """What every error we report carries (ProtocolError, StorageError, HttpError)."""

    code: Any
    message: str
    extra: dict[str, Any]


class HttpError(Exception):
    """A failure with a status of its own, or one to answer with extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra


def status_of(error: WireError) -> int:
    if isinstance(error, HttpError):
        return error.status
    return STATUS.get(str(error.code), 500)


def error_body(error: WireError) -> bytes:
    """``{"code", "message"}`` plus the code's further fields. No file bytes, ever."""
    body = {"code": str(error.code), "message": error.message, **error.extra}
    return json.dumps(body, separators=(",", ":")).encode()


def bad_request(message: str, *, status: int = 400) -> HttpError:
    return HttpError(status, ErrorCode.BAD_REQUEST, message)
