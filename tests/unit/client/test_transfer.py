"""Unit tests for client/transfer.py: a download is verified before it counts."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from client import errors
from client.transfer import verify_download
from tests.unit.client.frames import SHA_EMPTY


def _info(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha1": hashlib.sha1(data).hexdigest(), "length": len(data)}


def test_verify_download_accepts_good_stream() -> None:
    data = b"brain"
    digest = hashlib.sha1(data).digest()
    verify_download(_info(data), {"key": "k"}, len(data), len(data), digest, digest)


def test_verify_download_rejects_digest_mismatch() -> None:
    digest = hashlib.sha1(b"brain").digest()
    with pytest.raises(errors.IntegrityError, match="does not match END") as info:
        verify_download(_info(b"brain"), {"key": "k"}, 5, 5, SHA_EMPTY, digest)
    assert info.value.fields["expected"] == digest.hex()


def test_verify_download_rejects_short_stream() -> None:
    digest = hashlib.sha1(b"bra").digest()
    with pytest.raises(errors.IntegrityError, match="after 3 of 5"):
        verify_download(_info(b"brain"), {"key": "k"}, 3, 5, digest, digest)


def test_verify_download_whole_file_checks_stored_sha1() -> None:
    other = hashlib.sha1(b"other").digest()
    info = _info(b"brain")
    with pytest.raises(errors.IntegrityError, match="stored sha1"):
        verify_download(info, {"key": "k"}, 5, 5, other, other)
    # A range of the middle is not compared with the whole-file digest.
    verify_download(info, {"key": "k", "offset": 1}, 5, 5, other, other)
