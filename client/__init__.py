"""Valise client: a standard-library-only library and CLI for the Valise wire protocol.

This folder can be vendored as is (it is the ``valise`` package of the wheel
and of ``valise.pyz``). ``Client`` blocks, ``AsyncClient`` is for asyncio;
both stream files in frames, verify SHA-1 both ways and retry what is safe to
retry. ``python -m client --help`` for the command line.

Python 3.8 or newer. This file alone is written so that Python 3.6 and 3.7
can parse it (no ``from __future__ import annotations``, which 3.6 rejects
at compile time): on those, the check below says which Python is needed,
in one line, before any module they could not run is imported.
"""

import sys

NEEDS = "valise client needs Python 3.8 or newer"

if sys.version_info < (3, 8):  # noqa: UP036 - the whole point: 3.6 and 3.7 reach this line
    _why = f"{NEEDS} (this is Python {sys.version.split()[0]})"
    if sys.argv[:1] == ["-m"]:
        # ``python -m client ...``: a person at a console, one line and exit 1.
        raise SystemExit(_why)
    raise ImportError(_why)

from .errors import (  # noqa: E402 - only once the version check passed
    ERRORS_BY_CODE,
    BadFrame,
    BadKey,
    BadRange,
    BadRequest,
    BadVersion,
    Busy,
    ChecksumMismatch,
    ConnectionFailed,
    ConnectionLost,
    Corrupt,
    Exists,
    Forbidden,
    IntegrityError,
    Internal,
    NotFound,
    ProtocolError,
    RequestTimeout,
    ShuttingDown,
    SizeMismatch,
    StorageFull,
    Timeout,
    TooLarge,
    TransientError,
    Unauthorized,
    Unavailable,
    Unsupported,
    ValiseError,
    error_from_wire,
)


def __getattr__(name):  # type: ignore[no-untyped-def]  # 3.6 must parse this file
    # Client and AsyncClient on first use (PEP 562): they import asyncio, which
    # ``valise --help`` and every module of the package that needs no client
    # would otherwise pay for at start-up.
    if name == "AsyncClient":
        from .aio import AsyncClient

        return AsyncClient
    if name == "Client":
        from .sync import Client

        return Client
    raise AttributeError("module 'client' has no attribute " + repr(name))


__all__ = [
    "ERRORS_BY_CODE",
    "NEEDS",
    "AsyncClient",
    "BadFrame",
    "BadKey",
    "BadRange",
    "BadRequest",
    "BadVersion",
    "Busy",
    "ChecksumMismatch",
    "Client",
    "ConnectionFailed",
    "ConnectionLost",
    "Corrupt",
    "Exists",
    "Forbidden",
    "IntegrityError",
    "Internal",
    "NotFound",
    "ProtocolError",
    "RequestTimeout",
    "ShuttingDown",
    "SizeMismatch",
    "StorageFull",
    "Timeout",
    "TooLarge",
    "TransientError",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
    "ValiseError",
    "error_from_wire",
]
