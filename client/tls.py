"""TLS for the client: server verification, optional client certificate (mutual TLS).

Also what a failed handshake asks a person to change (:func:`hint`), for
every way of connecting (client/connection.py, client/probe.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ValiseError

if TYPE_CHECKING:
    import ssl


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
    import ssl  # here: plain TCP (valise ping) never loads it

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


def hint(error: ValiseError, cause: BaseException) -> None:
    """What to change when a TLS handshake fails for a reason that will not go away."""
    import ssl  # loaded already: a handshake failed

    reason = str(getattr(cause, "reason", "") or "")
    if isinstance(cause, ssl.SSLCertVerificationError):
        error.hint = (
            "the server's certificate is not trusted here: give the CA that signed it "
            "with --tls-ca FILE (VALISE_TLS_CA), and connect by a name the certificate holds"
        )
    elif reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        error.hint = "the server does not use TLS on this port: leave out --tls and --tls-ca"
    elif "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
        error.hint = (
            "the server wants a client certificate (mutual TLS): give --tls-cert FILE "
            "and --tls-key FILE (VALISE_TLS_CERT, VALISE_TLS_KEY)"
        )
    else:
        return
    error.permanent = True
