"""The tus 1.0.0 header fields, parsed and spelled without I/O (docs/http.md section 7).

Pure functions, unit-tested whole (tests/unit/service/test_http_tusfields.py).
What a request may not say is an :class:`~service.http.errors.HttpError`
with the status the tus specification gives it. Metadata values can be PHI
(a file name, a key): no message here ever quotes one.
"""

from __future__ import annotations

import base64
import binascii
import re

from protocol.errors import ErrorCode
from service.http import headers
from service.http.errors import HttpError, bad_request

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
ALGORITHMS = "sha1"
#: The only body a PATCH may carry (and a POST that uploads).
OFFSET_STREAM = "application/offset+octet-stream"

Header = tuple[str, str]

#: On every response to /v1/uploads/.
RESUMABLE: Header = ("Tus-Resumable", VERSION)

_METADATA_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # visible ASCII but ","


def check_resumable(value: str | None) -> None:
    """Every request but OPTIONS says which tus version it speaks: 412 otherwise."""
    if value is None or value.strip() != VERSION:
        raise HttpError(
            412,
            ErrorCode.BAD_REQUEST,
            f"this server speaks tus {VERSION}: send Tus-Resumable: {VERSION}",
            headers=(("Tus-Version", VERSION),),
        )


def number(value: str | None, name: str) -> int:
    """A field holding a non-negative integer (``Upload-Offset``, ``Upload-Length``)."""
    if value is None:
        raise bad_request(f"{name} is missing")
    value = value.strip()
    if not headers.digits(value):
        raise bad_request(f"{name} must be a non-negative integer")
    return int(value)


def is_offset_stream(content_type: str | None) -> bool:
    """``Content-Type: application/offset+octet-stream`` (parameters ignored)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == OFFSET_STREAM


def parse_metadata(value: str | None) -> dict[str, bytes]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value
    may be absent: an empty one). Keys are unique."""
    found: dict[str, bytes] = {}
    if value is None or not value.strip():
        return found
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if not parts[0] or len(parts) > 2 or not _METADATA_KEY.fullmatch(parts[0]):
            raise bad_request("Upload-Metadata must be comma-separated 'key base64value' pairs")
        name = parts[0]
        if name in found:
            raise bad_request("Upload-Metadata names a key twice")
        try:
            found[name] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise bad_request("an Upload-Metadata value is not valid base64") from None
    return found


def text(metadata: dict[str, bytes], name: str) -> str | None:
    """A metadata value as UTF-8 text; None when absent."""
    raw = metadata.get(name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"Upload-Metadata {name} is not UTF-8") from None


def whole_sha1(metadata: dict[str, bytes]) -> str | None:
    """The ``sha1`` metadata: the whole file's SHA-1, 40 hex characters."""
    value = text(metadata, "sha1")
    return None if value is None else headers.parse_hex_sha1(value, "Upload-Metadata sha1")


def ttl(metadata: dict[str, bytes]) -> int | None:
    value = text(metadata, "ttl")
    return None if value is None else headers.seconds(value, "Upload-Metadata ttl")


def parse_checksum(value: str | None) -> bytes | None:
    """``Upload-Checksum: sha1 <base64>``: the 20 bytes the PATCH's body must hash to.

    Another algorithm is a 400 (tus: the server does not support it).
    """
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm.lower() != "sha1":
        raise bad_request(f"Upload-Checksum: algorithm not supported; use {ALGORITHMS}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("Upload-Checksum: the digest is not valid base64") from None
    if len(digest) != 20:
        raise bad_request("Upload-Checksum: a sha1 digest is 20 bytes")
    return digest


def options(max_size: int) -> list[Header]:
    """What OPTIONS tells a client about this server."""
    return [
        ("Tus-Version", VERSION),
        ("Tus-Extension", EXTENSIONS),
        ("Tus-Max-Size", str(max_size)),
        ("Tus-Checksum-Algorithm", ALGORITHMS),
    ]
