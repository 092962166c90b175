"""TLS for the client: server verification, optional client certificate (mutual TLS)."""

from __future__ import annotations

import ssl
from typing import Any


def context(
    *,
    tls: bool = False,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> ssl.SSLContext | None:
    """An SSL context when any TLS option is given, else None (plain TCP).

    ``ca`` replaces the system trust store (a private CA); ``cert``/``key``
    present a client certificate. The server's name is always verified.
    """
    if not (tls or ca or cert):
        return None
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def from_args(args: Any) -> ssl.SSLContext | None:
    """The context for parsed CLI arguments (--tls, --tls-ca, --tls-cert, --tls-key)."""
    return context(
        tls=bool(getattr(args, "tls", False)),
        ca=getattr(args, "tls_ca", None),
        cert=getattr(args, "tls_cert", None),
        key=getattr(args, "tls_key", None),
    )
