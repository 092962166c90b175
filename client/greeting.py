"""HELLO, the request every client connection opens with (docs/protocol.md section 2).

What a greeting sends, and what its failure means to a person, in one place:
the asyncio client (client/aio.py) and the blocking probe behind
``valise ping`` (client/probe.py, which must not import asyncio) both greet,
and a person must read the same hint from either.
"""

from __future__ import annotations

from typing import Any

from .errors import ConnectionLost, Unauthorized, ValiseError
from .wire import PROTOCOL_VERSION

__all__ = ["body", "explain"]


def body(client_name: str, token: str | None) -> dict[str, Any]:
    """The HELLO payload; an empty token is still sent (the server says what it thinks)."""
    hello: dict[str, Any] = {"version": PROTOCOL_VERSION, "client": client_name}
    if token is not None:
        hello["token"] = token
    return hello


def explain(exc: ValiseError, *, token: bool, tls: bool, heard: bool) -> None:
    """Give a failed HELLO the hint a person can act on.

    ``token``: one was sent; ``tls``: the connection is TLS; ``heard``: the
    server sent at least a byte on this connection.
    """
    if isinstance(exc, Unauthorized):
        exc.hint = (
            "the server did not accept this token: check VALISE_TOKEN (or --token)"
            if token
            else "this server needs a token: set VALISE_TOKEN (or give --token TOKEN)"
        )
    elif isinstance(exc, ConnectionLost) and not heard:
        exc.hint = _silent_close_hint(tls)


def _silent_close_hint(tls: bool) -> str:
    """A server that hangs up on HELLO without a byte: most often TLS on one side only."""
    if not tls:
        return (
            "the server hung up without a word: if it uses TLS, add --tls "
            "(and --tls-ca FILE for a private CA; VALISE_TLS_CA)"
        )
    return (
        "the server hung up right after the TLS handshake: if it wants a client "
        "certificate (mutual TLS), give --tls-cert FILE and --tls-key FILE "
        "(VALISE_TLS_CERT, VALISE_TLS_KEY), signed by a CA it trusts"
    )
