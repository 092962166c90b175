"""Unit tests for client/greeting.py: the HELLO payload and the hints of a failed greeting."""

from __future__ import annotations

import pytest

from client.errors import BadVersion, ConnectionLost, Unauthorized, ValiseError
from client.greeting import body, explain


def test_hello_names_the_client_and_sends_any_token_even_an_empty_one() -> None:
    assert body("valise-cli", None) == {"version": 1, "client": "valise-cli"}
    assert body("agent", "")["token"] == ""


@pytest.mark.parametrize(
    ("token", "said"),
    [(False, "this server needs a token: set VALISE_TOKEN"), (True, "did not accept this token")],
)
def test_a_refused_hello_says_what_to_do_about_the_token(token: bool, said: str) -> None:
    refused = Unauthorized("unknown token")
    explain(refused, token=token, tls=False, heard=True)
    assert said in str(refused.hint)


@pytest.mark.parametrize(
    ("tls", "said"),
    [(False, "if it uses TLS, add --tls"), (True, "give --tls-cert FILE and --tls-key FILE")],
)
def test_a_server_that_hangs_up_without_a_byte_is_probably_tls_on_one_side(
    tls: bool, said: str
) -> None:
    silent = ConnectionLost("server closed the connection")
    explain(silent, token=False, tls=tls, heard=False)
    assert said in str(silent.hint)


@pytest.mark.parametrize(
    "error",
    [ConnectionLost("server closed the connection"), BadVersion("no"), ValiseError("odd")],
)
def test_other_failures_get_no_guess(error: ValiseError) -> None:
    explain(error, token=False, tls=False, heard=True)  # it spoke: not a TLS mismatch
    assert error.hint is None
