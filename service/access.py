"""One structured log record per request, with no PHI in it.

Key names can be PHI (a patient's name in a file name): the record carries a
short keyed hash of the key (HMAC-SHA256 with a per-process random secret,
so the same key is recognisable within a run and meaningless outside it),
unless ``--log-keys`` is set. File bytes, tokens and Valkey URLs never reach
a log record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time

from service import logs

log = logging.getLogger("valise.access")

#: Key hashes remembered at most.
_REFS = 4096

#: SHA-256's block, to which HMAC pads its key (RFC 2104).
_BLOCK = 64


def _padded(secret: bytes, pad: int) -> hashlib._Hash:
    """SHA-256 with HMAC's padded key (``secret`` XOR ``pad``) already hashed."""
    return hashlib.sha256(bytes(b ^ pad for b in secret.ljust(_BLOCK, b"\0")))


class AccessLog:
    def __init__(self, *, log_keys: bool = False) -> None:
        self.log_keys = log_keys
        self._secret = secrets.token_bytes(32)
        # HMAC-SHA256 is sha256(outer + sha256(inner + key)): both padded keys
        # hashed once, copied per key. hmac.new() or hmac.digest() set up
        # OpenSSL's HMAC each time, half the cost of a key's line.
        self._inner = _padded(self._secret, 0x36)
        self._outer = _padded(self._secret, 0x5C)
        #: Keyed hashes of recent keys: a PUT and its GET hash the key once.
        self._refs: dict[str, str] = {}

    def key_ref(self, key: str) -> str:
        if self.log_keys:
            return key
        ref = self._refs.get(key)
        if ref is None:
            inner = self._inner.copy()
            inner.update(key.encode("utf-8", "replace"))
            outer = self._outer.copy()
            outer.update(inner.digest())
            ref = "h:" + outer.hexdigest()[:16]
            if len(self._refs) >= _REFS:
                self._refs.clear()  # bounded; the recent keys come back at once
            self._refs[key] = ref
        return ref

    def record(
        self,
        *,
        peer: str,
        namespace: str,
        op: str,
        key: str | None,
        nbytes: int,
        started: float,
        outcome: str,
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        ms = (time.monotonic() - started) * 1000
        ref = None if key is None else self.key_ref(key)
        sole = logs.sole_handler(log)
        if sole is not None:
            # Nobody else listens: the line logging would write, without a LogRecord.
            handler, formatter = sole
            line = formatter.access_line(time.time(), peer, namespace, op, ref, nbytes, ms, outcome)
            handler.add_line(line)
            return
        entry: dict[str, object] = {
            "time": round(time.time(), 3),
            "peer": peer,
            "namespace": namespace,
            "op": op,
            "key": ref,
            "bytes": nbytes,
            "ms": round(ms, 2),
            "outcome": outcome,
        }
        # The text line is the JSON; --log-format json takes the fields as they are.
        log.info(json.dumps(entry, separators=(",", ":")), extra={"access": entry})
