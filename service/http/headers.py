"""The header fields the HTTP door reads and writes, parsed and spelled without I/O.

Pure functions, unit-tested whole (tests/unit/service/test_http_headers.py):
ranges (RFC 9110 section 14), entity tags and the conditions on them (RFC
9110 section 13), ``Repr-Digest`` (RFC 9530) and ``X-Checksum-SHA1``,
``Authorization: Bearer``, HTTP dates. What a request may not say is an
:class:`~service.http.errors.HttpError` (400); what a request may say and
we choose to ignore (a multi-range, an unknown digest algorithm) is None.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass

from service.http.errors import bad_request

#: Most digits a byte position may have: 10**19 is past any file (and int64).
_MAX_DIGITS = 19
_HEX_SHA1 = re.compile(r"[0-9a-fA-F]{40}")
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')


class Fields:
    """A message's header (or trailer) fields: names lowercased, values as text.

    Repeated fields are joined with ", " (RFC 9110 section 5.3), which is
    what every list-valued field we read means.
    """

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in raw:
            self._values.setdefault(name.decode("ascii").lower(), []).append(
                value.decode("latin-1")
            )

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return None if values is None else ", ".join(values)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __len__(self) -> int:
        return sum(len(v) for v in self._values.values())


# -- ranges -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ByteRange:
    """One range of ``Range: bytes=...``: ``first-last``, ``first-`` or ``-suffix``."""

    first: int | None
    last: int | None = None
    suffix: int | None = None

    def resolve(self, size: int) -> tuple[int, int] | None:
        """(offset, length) within a file of ``size`` bytes; None when unsatisfiable."""
        if self.suffix is not None:
            if self.suffix == 0 or size == 0:
                return None
            offset = max(size - self.suffix, 0)
            return offset, size - offset
        assert self.first is not None
        if self.first >= size:
            return None
        stop = size if self.last is None else min(self.last + 1, size)
        return self.first, stop - self.first


def parse_range(value: str | None) -> ByteRange | None:
    """The single byte range asked for, or None: the whole file is sent.

    No header, another unit, a malformed header and several ranges all mean
    the whole file (RFC 9110 section 14.2 lets a server ignore Range; we
    never answer multipart/byteranges).
    """
    if value is None:
        return None
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not digits(first or "0") or not digits(last or "0"):
        return None
    if not first:
        return ByteRange(None, suffix=int(last)) if last else None
    if last and int(last) < int(first):
        return None
    return ByteRange(int(first), int(last) if last else None)


def digits(text: str) -> bool:
    """Whether ``text`` is a non-negative integer as HTTP fields spell one."""
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS


def content_range(offset: int, length: int, size: int) -> str:
    return f"bytes {offset}-{offset + length - 1}/{size}"


def unsatisfied_range(size: int) -> str:
    return f"bytes */{size}"


# -- entity tags and conditions ------------------------------------------


def etag(sha1: str, version: str) -> str:
    """A stored version's strong entity tag: its SHA-1 and its version id."""
    return f'"{sha1}:{version}"'


def _tags(value: str) -> list[tuple[bool, str]] | None:
    """``(weak, tag)`` of each entity tag in a list; None when the list is malformed."""
    tags: list[tuple[bool, str]] = []
    at = 0
    while at < len(value):
        match = _ENTITY_TAG.match(value, at)
        if match is None or match.end() == at:
            return None
        tags.append((match.group(1) is not None, f'"{match.group(2)}"'))
        at = match.end()
    return tags


def none_match(value: str, current: str) -> bool:
    """If-None-Match (weak comparison): True when ``current`` is listed, or for ``*``."""
    if value.strip() == "*":
        return True
    return any(tag == current for _, tag in _tags(value) or [])


def match(value: str, current: str) -> bool:
    """If-Match (strong comparison): True for ``*`` or when ``current`` is listed unweakened."""
    if value.strip() == "*":
        return True
    return any(not weak and tag == current for weak, tag in _tags(value) or [])


def range_applies(value: str | None, current: str) -> bool:
    """If-Range: the range is served only for our strong tag, never for a date.

    A date names no version: two uploads in one second share it, so a date
    could splice two versions. It gets the whole file.
    """
    if value is None:
        return True
    tags = _tags(value)
    return tags is not None and len(tags) == 1 and tags[0] == (False, current)


# -- digests -------------------------------------------------------------


def repr_digest(sha1: str) -> str:
    """``Repr-Digest: sha=:<base64>:`` of a hex SHA-1 (RFC 9530, RFC 8941 byte sequence)."""
    return f"sha=:{base64.b64encode(bytes.fromhex(sha1)).decode()}:"


def parse_repr_digest(value: str) -> str | None:
    """The hex SHA-1 of a Repr-Digest field; None when it names only other algorithms.

    A ``sha`` member that is not 20 bytes of base64 is a bad request: the
    client meant to have its upload checked, and we cannot.
    """
    for member in value.split(","):
        key, eq, item = member.strip().partition("=")
        if key.strip().lower() != "sha":
            continue
        item = item.split(";", 1)[0].strip()  # parameters, if any, are ignored
        if not eq or len(item) < 2 or item[0] != ":" or item[-1] != ":":
            raise bad_request("Repr-Digest: sha must be a byte sequence, :base64:")
        try:
            raw = base64.b64decode(item[1:-1], validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("Repr-Digest: sha is not valid base64") from None
        if len(raw) != 20:
            raise bad_request(f"Repr-Digest: sha must be 20 bytes, not {len(raw)}")
        return raw.hex()
    return None


def parse_hex_sha1(value: str, name: str = "X-Checksum-SHA1") -> str:
    value = value.strip()
    if not _HEX_SHA1.fullmatch(value):
        raise bad_request(f"{name} must be 40 hexadecimal characters")
    return value.lower()


def expected_sha1(*fields: Fields | None) -> str | None:
    """The SHA-1 the client vouches for, from headers and trailers; every copy must agree."""
    found: set[str] = set()
    for source in fields:
        if source is None:
            continue
        digest = source.get("repr-digest")
        if digest is not None:
            sha1 = parse_repr_digest(digest)
            if sha1 is not None:
                found.add(sha1)
        hex_sha1 = source.get("x-checksum-sha1")
        if hex_sha1 is not None:
            found.add(parse_hex_sha1(hex_sha1))
    if len(found) > 1:
        raise bad_request("Repr-Digest and X-Checksum-SHA1 name different SHA-1s")
    return found.pop() if found else None


# -- the rest --------------------------------------------------------------


def bearer(value: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None for anything else."""
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def seconds(value: str, name: str) -> int:
    """A field holding whole seconds (``X-Valise-TTL``); its range is checked by the caller."""
    value = value.strip()
    if not digits(value):
        raise bad_request(f"{name} must be a whole number of seconds")
    return int(value)


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


def media_type(value: str | None) -> str | None:
    """A Content-Type we can store and send back as it is: visible ASCII, or nothing."""
    if value is None:
        return None
    value = value.strip()
    if not value or not all(" " <= c <= "~" or c == "\t" for c in value):
        return None
    return value
