"""service/http/headers.py: what the HTTP door reads in a request's fields, and writes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.http import headers as h
from service.http.errors import HttpError

SHA1 = hashlib.sha1(b"scan").hexdigest()
B64 = base64.b64encode(bytes.fromhex(SHA1)).decode()
TAG = h.etag(SHA1, "v1")


def fields(*pairs: tuple[str, str]) -> h.Fields:
    return h.Fields((name.encode(), value.encode("latin-1")) for name, value in pairs)


# -- ranges -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "part"),
    [
        ("bytes=0-0", 100, (0, 1)),  # the first byte
        ("bytes=99-99", 100, (99, 1)),  # the last byte
        ("bytes=-1", 100, (99, 1)),  # the last byte, as a suffix
        ("bytes=-30", 100, (70, 30)),
        ("bytes=-500", 100, (0, 100)),  # a suffix longer than the file: all of it
        ("bytes=10-", 100, (10, 90)),
        ("bytes=10-1000", 100, (10, 90)),  # cut at the end
        ("bytes = 5-9", 100, (5, 5)),
        ("BYTES=5-9", 100, (5, 5)),
    ],
)
def test_a_satisfiable_range(header: str, size: int, part: tuple[int, int]) -> None:
    asked = h.parse_range(header)
    assert asked is not None
    assert asked.resolve(size) == part


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),  # starts at the end
        ("bytes=500-600", 100),
        ("bytes=-0", 100),
        ("bytes=0-", 0),  # nothing of an empty file can be asked for
        ("bytes=-5", 0),
    ],
)
def test_an_unsatisfiable_range(header: str, size: int) -> None:
    asked = h.parse_range(header)
    assert asked is not None
    assert asked.resolve(size) is None


@pytest.mark.parametrize(
    "header",
    [
        None,
        "bytes=0-1,5-6",  # several ranges: the whole file
        "items=0-1",
        "bytes=5-1",  # last before first: invalid, ignored
        "bytes=a-b",
        "bytes=-",
        "bytes=1",
        "bytes=" + "9" * 20 + "-",
        "bytes=٣-٤",  # digits, but not ASCII ones
    ],
)
def test_a_range_we_ignore_means_the_whole_file(header: str | None) -> None:
    assert h.parse_range(header) is None


@given(st.text(max_size=40))
def test_any_range_header_parses_or_is_ignored(header: str) -> None:
    asked = h.parse_range(header)
    if asked is not None:
        part = asked.resolve(1000)
        assert part is None or (0 <= part[0] < 1000 and 1 <= part[1] <= 1000 - part[0])


def test_content_range() -> None:
    assert h.content_range(0, 1, 100) == "bytes 0-0/100"
    assert h.content_range(70, 30, 100) == "bytes 70-99/100"
    assert h.unsatisfied_range(100) == "bytes */100"


# -- entity tags ----------------------------------------------------------


def test_the_etag_names_digest_and_version() -> None:
    assert h.etag("ab" * 20, "v9") == f'"{"ab" * 20}:v9"'


@pytest.mark.parametrize(
    ("header", "matched"),
    [
        ("*", True),
        (TAG, True),
        (f'"other", {TAG}', True),
        (f"W/{TAG}", True),  # If-None-Match compares weakly
        ('"other"', False),
        (h.etag(SHA1, "v2"), False),
        ("garbage", False),
    ],
)
def test_if_none_match(header: str, matched: bool) -> None:
    assert h.none_match(header, TAG) is matched


@pytest.mark.parametrize(
    ("header", "matched"),
    [
        ("*", True),
        (TAG, True),
        (f'"x",{TAG}', True),
        (f"W/{TAG}", False),  # If-Match compares strongly
        (h.etag(SHA1, "v2"), False),
        ('"unterminated', False),
    ],
)
def test_if_match(header: str, matched: bool) -> None:
    assert h.match(header, TAG) is matched


@pytest.mark.parametrize(
    ("header", "applies"),
    [
        (None, True),
        (TAG, True),
        (h.etag(SHA1, "v2"), False),
        (f"W/{TAG}", False),
        ("Thu, 03 Dec 2026 08:47:14 GMT", False),  # a date names no version
        (f"{TAG}, {TAG}", False),
    ],
)
def test_if_range(header: str | None, applies: bool) -> None:
    assert h.range_applies(header, TAG) is applies


# -- digests -------------------------------------------------------------


def test_repr_digest_spells_the_sha1_in_base64() -> None:
    assert h.repr_digest(SHA1) == f"sha=:{B64}:"
    assert h.parse_repr_digest(h.repr_digest(SHA1)) == SHA1


@pytest.mark.parametrize(
    "header",
    [
        f"sha=:{B64}:",
        f"sha-256=:{base64.b64encode(bytes(32)).decode()}:, sha=:{B64}:",
        f" SHA = :{B64}: ;param=1",
    ],
)
def test_repr_digest_among_other_members(header: str) -> None:
    assert h.parse_repr_digest(header) == SHA1


def test_repr_digest_of_other_algorithms_only_is_none() -> None:
    assert h.parse_repr_digest(f"sha-256=:{base64.b64encode(bytes(32)).decode()}:") is None


@pytest.mark.parametrize(
    "header",
    [
        f"sha={B64}",  # not a byte sequence
        "sha=:not base64!:",
        f"sha=:{base64.b64encode(bytes(19)).decode()}:",  # not 20 bytes
        "sha",
    ],
)
def test_a_malformed_sha_member_is_a_bad_request(header: str) -> None:
    with pytest.raises(HttpError) as raised:
        h.parse_repr_digest(header)
    assert (raised.value.status, raised.value.code) == (400, "bad_request")


def test_expected_sha1_from_headers_and_trailers() -> None:
    assert h.expected_sha1(fields()) is None
    assert h.expected_sha1(fields(("x-checksum-sha1", SHA1.upper()))) == SHA1
    both = fields(("repr-digest", f"sha=:{B64}:"), ("x-checksum-sha1", SHA1))
    assert h.expected_sha1(both) == SHA1
    assert h.expected_sha1(fields(), fields(("repr-digest", f"sha=:{B64}:"))) == SHA1
    assert h.expected_sha1(fields(), None) is None


def test_digests_that_disagree_are_a_bad_request() -> None:
    other = hashlib.sha1(b"other").hexdigest()
    with pytest.raises(HttpError):
        h.expected_sha1(fields(("repr-digest", f"sha=:{B64}:"), ("x-checksum-sha1", other)))
    with pytest.raises(HttpError):
        h.expected_sha1(fields(("x-checksum-sha1", SHA1)), fields(("x-checksum-sha1", other)))
    with pytest.raises(HttpError):
        h.expected_sha1(fields(("x-checksum-sha1", "abc")))


# -- the rest --------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer s3cret", "s3cret"),
        ("bearer  s3cret ", "s3cret"),
        ("Basic dXNlcjpwdw==", None),
        ("Bearer", None),
        ("Bearer a b", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert h.bearer(header) == token


def test_seconds() -> None:
    assert h.seconds(" 600 ", "X-Valise-TTL") == 600
    for bad in ("", "-1", "1.5", "soon"):
        with pytest.raises(HttpError, match="X-Valise-TTL"):
            h.seconds(bad, "X-Valise-TTL")


def test_media_type_keeps_only_what_can_be_sent_back() -> None:
    assert h.media_type("application/gzip") == "application/gzip"
    assert h.media_type('text/plain; charset="utf-8"') == 'text/plain; charset="utf-8"'
    assert h.media_type(None) is None
    assert h.media_type("") is None
    assert h.media_type("image/\x7f") is None
    assert h.media_type("text/é") is None


def test_fields_join_repeats_and_lowercase_names() -> None:
    f = h.Fields([(b"If-None-Match", b'"a"'), (b"if-none-match", b'"b"'), (b"Range", b"x")])
    assert f.get("if-none-match") == '"a", "b"'
    assert "range" in f
    assert f.get("absent") is None
    assert len(f) == 3


def test_http_date() -> None:
    assert h.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
