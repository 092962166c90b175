"""service/http/routes.py and errors.py: which handler, which key, which status."""

from __future__ import annotations

import json

import pytest

from protocol.errors import ErrorCode, ProtocolError
from service.http.errors import STATUS, HttpError, error_body, status_of
from service.http.routes import Target, route
from storage.errors import ChecksumMismatch, Corrupt, FileNotFound, StorageFull


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        (
            "PUT",
            "/v1/files/patients/1234/t1.nii.gz",
            Target("files", "PUT", "patients/1234/t1.nii.gz"),
        ),
        ("GET", "/v1/files/a%2Fb", Target("files", "GET", "a/b")),  # %2F is the same /
        ("GET", "/v1/files/caf%C3%A9", Target("files", "GET", "café")),
        ("GET", "/v1/files/what%3F?ignored=1", Target("files", "GET", "what?")),
        ("HEAD", "/v1/files/x", Target("files", "HEAD", "x")),
        ("DELETE", "/v1/files/x", Target("files", "DELETE", "x")),
        ("GET", "/v1/files/%20", Target("files", "GET", " ")),
        ("POST", "/upload/scan.nii", Target("upload", "POST", "scan.nii")),
        ("GET", "/download/scan.nii", Target("download", "GET", "scan.nii")),
        ("GET", "http://valise:7071/v1/files/x", Target("files", "GET", "x")),
    ],
)
def test_routes_and_keys(method: str, target: str, expected: Target) -> None:
    assert route(method, target) == expected


def test_list_takes_its_query() -> None:
    got = route("GET", "/v1/files?prefix=patients%2F12&cursor=&limit=5")
    assert got == Target("list", "GET", query={"prefix": "patients/12", "cursor": "", "limit": "5"})
    assert route("GET", "/v1/files/").name == "list"


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("/v1/files/%FF", 400, "bad_key"),  # not UTF-8
        ("/v1/files/a%00b", 400, "bad_key"),  # a control character
        ("/v1/files/" + "k" * 1025, 400, "bad_key"),
        ("/v1/other", 404, "not_found"),
        ("/", 404, "not_found"),
        ("/v1/uploads/", 405, "bad_request"),  # tus: OPTIONS and POST only
        ("/v1/uploadsX", 404, "not_found"),
        ("*", 400, "bad_request"),
    ],
)
def test_bad_targets(target: str, status: int, code: str) -> None:
    with pytest.raises((HttpError, ProtocolError)) as raised:
        route("GET", target)
    error = raised.value
    assert isinstance(error, HttpError | ProtocolError)
    assert str(error.code) == code
    assert status_of(error) == status


def test_tus_routes_name_the_upload_id_as_their_key() -> None:
    assert route("POST", "/v1/uploads/") == Target("tus", "POST")
    assert route("OPTIONS", "/v1/uploads") == Target("tus", "OPTIONS")
    assert route("PATCH", "/v1/uploads/tus.abc-_") == Target("tus", "PATCH", key="tus.abc-_")
    with pytest.raises(HttpError) as raised:
        route("GET", "/v1/uploads/tus.abc")
    assert dict(raised.value.headers) == {"Allow": "DELETE, HEAD, OPTIONS, PATCH"}


def test_a_method_the_route_lacks_is_405_with_allow() -> None:
    with pytest.raises(HttpError) as raised:
        route("POST", "/v1/files/x")
    assert raised.value.status == 405
    assert dict(raised.value.headers) == {"Allow": "DELETE, GET, HEAD, PUT"}
    with pytest.raises(HttpError):
        route("PUT", "/download/x")


def test_every_wire_code_has_a_status() -> None:
    assert set(ErrorCode) <= set(STATUS)
    assert STATUS["exists"] == 412


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (FileNotFound("no such file"), 404),
        (StorageFull("full"), 507),
        (Corrupt("chunk 3"), 500),
        (ProtocolError(ErrorCode.TOO_LARGE, "big", fatal=True), 413),
        (ProtocolError(ErrorCode.BUSY, "busy", fatal=True), 503),
        (ProtocolError(ErrorCode.TIMEOUT, "slow", fatal=True), 408),
        (HttpError(422, "bad_request", "empty"), 422),
    ],
)
def test_status_of(error: HttpError | ProtocolError | Exception, status: int) -> None:
    assert status_of(error) == status  # type: ignore[arg-type]


def test_error_body_is_code_and_message_and_the_mismatch() -> None:
    body = json.loads(error_body(ChecksumMismatch(expected="a" * 40, actual="b" * 40)))
    assert body == {
        "code": "checksum_mismatch",
        "message": "SHA-1 of the bytes received does not match END",
        "expected": "a" * 40,
        "actual": "b" * 40,
    }
    assert "fatal" not in json.loads(
        error_body(ProtocolError(ErrorCode.BAD_KEY, "bad", fatal=True))
    )
