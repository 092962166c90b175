"""Tokens and namespaces (docs/protocol.md sections 2 HELLO and 3).

The tokens file has one token per line: ``<token> <namespace> <rw|ro>``, with
``#`` comments and blank lines. A token may be written ``sha256:<hex>`` so the
file holds no secret in clear. Presented tokens are hashed and compared with
every entry in constant time. Several tokens may share a namespace.

With mutual TLS, a line may name a client certificate instead of a secret:
``subject:CN=<common name>``. A client presenting that (CA-verified)
certificate is granted the line's namespace and mode by a HELLO without token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path


class TokenFileError(Exception):
    """The tokens file is malformed; the message names the line."""


@dataclass(frozen=True, slots=True)
class Grant:
    namespace: str
    writable: bool


#: Everything is allowed in the single default namespace when no tokens are set.
OPEN = Grant(namespace="", writable=True)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    grant: Grant


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    def __init__(self, entries: list[_Entry], subjects: dict[str, Grant] | None = None) -> None:
        self._entries = entries
        self._subjects = subjects or {}

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenFileError(f"{path}: cannot read: {exc}") from None
        entries: list[_Entry] = []
        subjects: dict[str, Grant] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3 or parts[2] not in ("rw", "ro"):
                raise TokenFileError(f"{path}:{number}: expected '<token> <namespace> <rw|ro>'")
            token, namespace, mode = parts
            if token.startswith("subject:"):
                if not token.startswith("subject:CN=") or token == "subject:CN=":
                    raise TokenFileError(
                        f"{path}:{number}: subject lines look like subject:CN=name"
                    )
                subjects[token.removeprefix("subject:CN=")] = Grant(namespace, mode == "rw")
                continue
            if token.startswith("sha256:"):
                try:
                    digest = bytes.fromhex(token.removeprefix("sha256:"))
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    raise TokenFileError(f"{path}:{number}: sha256: needs 64 hex digits")
            else:
                digest = _digest(token)
            entries.append(_Entry(digest, Grant(namespace, mode == "rw")))
        if not entries and not subjects:
            raise TokenFileError(f"{path}: no tokens")
        return cls(entries, subjects)

    def check_subject(self, common_name: str | None) -> Grant | None:
        """The grant of a verified client certificate's common name, or None."""
        if common_name is None:
            return None
        return self._subjects.get(common_name)

    def check(self, token: str | None) -> Grant | None:
        """The grant of ``token``, or None. Time does not depend on which entry matches."""
        if token is None:
            return None
        presented = _digest(token)
        found: Grant | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry.grant
        return found


class FailureDelay:
    """Slow down failed authentication per client address (doubling, capped, forgiven).

    The delay grows with every failure from an address, whatever token was
    tried. A success forgives only the failures of the credential that
    succeeded (a mistyped token, then the right one), never the failures of
    other tokens from that address, and never anything at another address:
    holding one valid token does not buy fast guesses at the others.
    Behind a balancer the address is the client's, from the PROXY header.
    """

    #: Credentials remembered per address; failures past them still count.
    PER_ADDRESS = 16
    #: Addresses remembered; the stalest is dropped past it (bounded memory).
    ADDRESSES = 10_000

    def __init__(self, *, base: float = 0.1, cap: float = 5.0, forgive: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self.forgive = forgive
        self.failures_total = 0
        self._recent: dict[str, _Failures] = {}

    def failed(self, address: str, credential: str | None = None) -> float:
        """Record a failure from ``address``; the seconds to wait before answering."""
        now = time.monotonic()
        entry = self._recent.get(address)
        if entry is None or now - entry.last > self.forgive:
            entry = self._recent[address] = _Failures()
        entry.count += 1
        entry.last = now
        self.failures_total += 1
        tag = _tag(credential)
        if tag in entry.by_credential or len(entry.by_credential) < self.PER_ADDRESS:
            entry.by_credential[tag] = entry.by_credential.get(tag, 0) + 1
        if len(self._recent) > self.ADDRESSES:
            oldest = min(self._recent, key=lambda a: self._recent[a].last)
            del self._recent[oldest]
        return float(min(self.base * 2.0 ** (entry.count - 1), self.cap))

    def succeeded(self, address: str, credential: str | None = None) -> None:
        """``credential`` worked from ``address``: forgive its own failures there."""
        entry = self._recent.get(address)
        if entry is None:
            return
        entry.count -= entry.by_credential.pop(_tag(credential), 0)
        if entry.count <= 0:
            del self._recent[address]


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    #: Failures per credential (a short hash: no token is kept in clear).
    by_credential: dict[bytes, int] = field(default_factory=dict)


def _tag(credential: str | None) -> bytes:
    return _digest(credential or "")[:16]
