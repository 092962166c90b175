"""Unit tests for client/errors.py: every server code has its class, ERROR payloads map to them."""

from __future__ import annotations

import pytest

from client import errors
from protocol.errors import ErrorCode


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
def test_every_wire_code_has_a_class(code: str) -> None:
    exc = errors.error_from_wire({"code": code, "message": "m", "fatal": False})
    assert type(exc) is errors.ERRORS_BY_CODE[code]
    assert type(exc) is not errors.ValiseError
    assert (exc.code, exc.message, exc.fatal) == (code, "m", False)


def test_client_knows_exactly_the_server_codes() -> None:
    # protocol.errors.ErrorCode is what the server sends; a class for a code it
    # no longer has, or a code without a class, is a disagreement. Codes of
    # revision 2 features may be known to the client before the server has them.
    server = {c.value for c in ErrorCode}
    assert set(errors.ERRORS_BY_CODE) == server | errors.FEATURE_CODES
    for code, cls in errors.ERRORS_BY_CODE.items():
        assert cls.default_code == code


def test_exists_is_a_class_of_its_own() -> None:
    exc = errors.error_from_wire({"code": "exists", "message": "m", "fatal": False})
    assert type(exc) is errors.Exists
    assert not isinstance(exc, errors.TransientError | errors.IntegrityError)


def test_error_fields_and_families() -> None:
    exc = errors.error_from_wire(
        {
            "code": "checksum_mismatch",
            "message": "m",
            "fatal": False,
            "expected": "a",
            "actual": "b",
        }
    )
    assert isinstance(exc, errors.ChecksumMismatch)
    assert isinstance(exc, errors.IntegrityError)
    assert exc.fields == {"expected": "a", "actual": "b"}
    assert isinstance(errors.error_from_wire({"code": "busy"}), errors.TransientError)
    assert isinstance(errors.error_from_wire({"code": "corrupt"}), errors.IntegrityError)
    assert not isinstance(errors.error_from_wire({"code": "not_found"}), errors.TransientError)


def test_unknown_or_malformed_error() -> None:
    exc = errors.error_from_wire({"code": "brand_new", "message": 3})
    assert type(exc) is errors.ValiseError
    assert exc.code == "brand_new"
    assert exc.message == ""
    assert exc.fatal is True  # no fatal flag: reconnect to be safe
    assert errors.error_from_wire({}).code == "unknown"
