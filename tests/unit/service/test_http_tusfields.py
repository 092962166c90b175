"""The tus header fields, parsed and spelled (service/http/tusfields.py)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from service.http import tusfields as tf
from service.http.errors import HttpError


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_metadata_pairs_decode_and_an_empty_value_is_allowed() -> None:
    value = f"key {b64('patients/1234/ct.nii')},filename {b64('ct.nii')}, is_confidential"
    found = tf.parse_metadata(value)
    assert found == {"key": b"patients/1234/ct.nii", "filename": b"ct.nii", "is_confidential": b""}
    assert tf.text(found, "key") == "patients/1234/ct.nii"
    assert tf.text(found, "missing") is None
    assert tf.parse_metadata(None) == {}
    assert tf.parse_metadata("  ") == {}


@pytest.mark.parametrize(
    "value",
    [
        "key not-base64!",
        f"key {b64('a')},key {b64('b')}",  # the same key twice
        f"key {b64('a')} extra",
        f",key {b64('a')}",  # an empty pair
        f"k\u00e9y {b64('a')}",  # a key that is not visible ASCII
    ],
)
def test_malformed_metadata_is_a_bad_request_that_quotes_nothing(value: str) -> None:
    with pytest.raises(HttpError) as raised:
        tf.parse_metadata(value)
    assert raised.value.status == 400


def test_whole_file_sha1_and_ttl_metadata() -> None:
    digest = hashlib.sha1(b"scan").hexdigest()
    assert tf.whole_sha1({"sha1": digest.upper().encode()}) == digest
    assert tf.whole_sha1({}) is None
    with pytest.raises(HttpError):
        tf.whole_sha1({"sha1": b"abc"})
    assert tf.ttl({"ttl": b"600"}) == 600
    assert tf.ttl({}) is None
    for bad in (b"-1", b"1.5", b"ten", b"9" * 20):
        with pytest.raises(HttpError):
            tf.ttl({"ttl": bad})
    with pytest.raises(HttpError):
        tf.text({"key": b"\xff"}, "key")


def test_upload_checksum_is_sha1_only() -> None:
    raw = hashlib.sha1(b"piece").digest()
    assert tf.parse_checksum("sha1 " + base64.b64encode(raw).decode()) == raw
    assert tf.parse_checksum(None) is None
    for bad in ("md5 " + base64.b64encode(raw).decode(), "sha1 !!", "sha1 " + b64("short")):
        with pytest.raises(HttpError) as raised:
            tf.parse_checksum(bad)
        assert raised.value.status == 400


def test_tus_resumable_must_be_1_0_0_else_412_with_the_version() -> None:
    tf.check_resumable("1.0.0")
    for bad in (None, "0.2.2", ""):
        with pytest.raises(HttpError) as raised:
            tf.check_resumable(bad)
        assert raised.value.status == 412
        assert dict(raised.value.headers) == {"Tus-Version": "1.0.0"}


def test_numbers_and_the_offset_stream_type() -> None:
    assert tf.number("0", "Upload-Offset") == 0
    assert tf.number(" 42 ", "Upload-Offset") == 42
    for bad in (None, "-1", "1e3", "9" * 20):
        with pytest.raises(HttpError):
            tf.number(bad, "Upload-Offset")
    assert tf.is_offset_stream("application/offset+octet-stream")
    assert tf.is_offset_stream("Application/Offset+Octet-Stream; charset=binary")
    assert not tf.is_offset_stream("application/octet-stream")
    assert not tf.is_offset_stream(None)


def test_options_lists_the_extensions_and_the_largest_size() -> None:
    told = dict(tf.options(1234))
    assert told["Tus-Max-Size"] == "1234"
    assert told["Tus-Checksum-Algorithm"] == "sha1"
    assert "expiration" in told["Tus-Extension"].split(",")
