"""Typed client requests, validated from their JSON payloads (docs/protocol.md sections 2-3).

Validation raises :class:`ProtocolError` with the code the spec names. Whether
an error is fatal depends on the request: HELLO and PUT errors are fatal (a PUT
client may already be streaming DATA), the others are not. ``null`` in an
optional field means the field is absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, ProtocolError
from protocol.frames import MAX_ID

MAX_KEY_BYTES = 1024
#: A content type is a short media type; a long one would make the file info
#: (every STAT, GET and LIST reply) outgrow the 64 KiB control payload.
MAX_CONTENT_TYPE_BYTES = 255
#: LIST page size when the client gives none, and the most it may ask for.
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    token: str | None
    client: str | None


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    size: int | None
    ttl: int | None
    content_type: str | None
    #: Keep the bytes when the connection ends, for a RESUME (section 6.1).
    resumable: bool = False
    #: Commit only if the key has no file at that moment (section 6.4).
    if_absent: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    offset: int | None
    length: int | None
    #: Stream this version or nothing (section 6.2).
    version: str | None = None


@dataclass(frozen=True, slots=True)
class Stat:
    key: str


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class List:
    prefix: str
    cursor: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class Resume:
    """RESUME (section 6.1): continue the resumable upload ``upload_id``."""

    upload_id: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (section 6.3): events under ``prefix``, after event ``since``."""

    prefix: str
    since: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    """PING: echoed back byte for byte (re-encoding could grow it past 64 KiB)."""

    payload: bytes


Request = Hello | Put | Get | Stat | Delete | List | Ping | Resume | Subscribe


class _Fields:
    """Typed access to a request's JSON object; errors carry the request's fatality."""

    def __init__(self, obj: dict[str, Any], *, fatal: bool) -> None:
        self._obj = obj
        self._fatal = fatal

    def error(self, code: ErrorCode, message: str) -> ProtocolError:
        return ProtocolError(code, message, fatal=self._fatal)

    def optional_str(self, name: str) -> str | None:
        value = self._obj.get(name)
        if value is not None and not isinstance(value, str):
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} must be a string")
        if value is not None and not _is_utf8(value):
            # JSON can spell a lone surrogate ("\ud800"); it has no UTF-8 form.
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} is not valid UTF-8")
        return value

    def optional_bool(self, name: str) -> bool:
        value = self._obj.get(name)
        if value is not None and not isinstance(value, bool):
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} must be true or false")
        return bool(value)

    def optional_id(self, name: str) -> str | None:
        """An id the server handed out: a non-empty string of at most MAX_ID characters."""
        value = self.optional_str(name)
        if value is not None and not 1 <= len(value) <= MAX_ID:
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} must be 1 to {MAX_ID} long")
        return value

    def optional_int(self, name: str, *, minimum: int = 0) -> int | None:
        value = self._obj.get(name)
        if value is None:
            return None
        # bool is an int subclass in Python; JSON true is not an integer.
        if type(value) is not int:
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} must be an integer")
        if value < minimum:
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} must be >= {minimum}")
        return value

    def key(self, name: str = "key") -> str:
        value = self._obj.get(name)
        if value is None:
            raise self.error(ErrorCode.BAD_REQUEST, f"missing field {name!r}")
        if not isinstance(value, str):
            raise self.error(ErrorCode.BAD_REQUEST, f"field {name!r} must be a string")
        check_key(value, fatal=self._fatal)
        return value


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: A control character (C0 or DEL), which keys and content types may not hold.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def check_key(key: str, *, fatal: bool) -> None:
    """docs/protocol.md section 3: 1..1024 UTF-8 bytes, no control characters."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        # JSON can spell a lone surrogate ("\ud800"); it has no UTF-8 form.
        raise ProtocolError(ErrorCode.BAD_KEY, "key is not valid UTF-8", fatal=fatal) from None
    if not 1 <= size <= MAX_KEY_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_KEY, f"key must be 1 to {MAX_KEY_BYTES} bytes, not {size}", fatal=fatal
        )
    if _CONTROL.search(key):
        raise ProtocolError(ErrorCode.BAD_KEY, "key contains a control character", fatal=fatal)


def check_content_type(content_type: str | None, *, fatal: bool) -> None:
    """At most MAX_CONTENT_TYPE_BYTES of UTF-8, no control characters."""
    if content_type is None:
        return
    if len(content_type.encode("utf-8", "surrogatepass")) > MAX_CONTENT_TYPE_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"content_type must be at most {MAX_CONTENT_TYPE_BYTES} bytes",
            fatal=fatal,
        )
    if _CONTROL.search(content_type):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "content_type contains a control character", fatal=fatal
        )


def parse_hello(obj: dict[str, Any]) -> Hello:
    fields = _Fields(obj, fatal=True)
    version = obj.get("version")
    if type(version) is not int:
        raise fields.error(ErrorCode.BAD_REQUEST, "HELLO needs an integer 'version'")
    return Hello(version, fields.optional_str("token"), fields.optional_str("client"))


def parse_put(obj: dict[str, Any], *, max_file_size: int, max_ttl: int) -> Put:
    fields = _Fields(obj, fatal=True)
    key = fields.key()
    size = fields.optional_int("size")
    ttl = fields.optional_int("ttl", minimum=1)
    content_type = fields.optional_str("content_type")
    check_content_type(content_type, fatal=True)
    if ttl is not None and ttl > max_ttl:
        raise fields.error(ErrorCode.BAD_REQUEST, f"ttl must be 1..{max_ttl} seconds")
    if size is not None and size > max_file_size:
        raise fields.error(
            ErrorCode.TOO_LARGE, f"size {size} exceeds max_file_size {max_file_size}"
        )
    resumable = fields.optional_bool("resumable")
    if_absent = fields.optional_bool("if_absent")
    return Put(key, size, ttl, content_type, resumable, if_absent)


def parse_get(obj: dict[str, Any]) -> Get:
    fields = _Fields(obj, fatal=False)
    return Get(
        fields.key(),
        fields.optional_int("offset"),
        fields.optional_int("length"),
        fields.optional_id("version"),
    )


def parse_stat(obj: dict[str, Any]) -> Stat:
    return Stat(_Fields(obj, fatal=False).key())


def parse_delete(obj: dict[str, Any]) -> Delete:
    return Delete(_Fields(obj, fatal=False).key())


def parse_list(obj: dict[str, Any]) -> List:
    fields = _Fields(obj, fatal=False)
    limit = fields.optional_int("limit", minimum=1)
    return List(
        prefix=fields.optional_str("prefix") or "",
        cursor=fields.optional_str("cursor"),
        limit=min(limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT),
    )


def parse_resume(obj: dict[str, Any]) -> Resume:
    """Errors answering RESUME are never fatal: the client waits for the OK (section 6.1)."""
    fields = _Fields(obj, fatal=False)
    upload_id = fields.optional_id("upload_id")
    if upload_id is None:
        raise fields.error(ErrorCode.BAD_REQUEST, "missing field 'upload_id'")
    return Resume(upload_id)


def parse_subscribe(obj: dict[str, Any]) -> Subscribe:
    fields = _Fields(obj, fatal=False)
    return Subscribe(fields.optional_str("prefix") or "", fields.optional_str("since"))
