"""The encryption key file: one ``<key-id> <base64 of 32 random bytes>`` per line.

The first key seals new values; every key opens them (rotation: put a new
key first, SIGHUP, and drop the old line once the files it sealed have
expired; docs/security.md). ``#`` comments and blank lines are allowed.

A file that group or others may read or change, that is empty, malformed,
or holds a key that is not 32 bytes is refused with one line naming the
file, the line number and the key id: never a key, never a line's text.

``python -m service.keys new [KEY_ID]`` prints a new key line (:func:`new_line`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import secrets
import stat
import time

from storage.crypto import KEY_BYTES, KEY_ID, Keyring, Sealer

#: A key file is a few lines; anything larger is not one.
MAX_BYTES = 64 * 1024


class KeyFileError(Exception):
    """The key file cannot be used; the message never holds key material."""


def load(path: str) -> Keyring:
    """The keys of ``path``, first one first; :class:`KeyFileError` when refused."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: group or others may read or change it "
            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
        )
    if len(data) > MAX_BYTES:
        raise KeyFileError(f"{path}: larger than {MAX_BYTES} bytes: not a key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not UTF-8 text") from None
    keys: list[tuple[str, bytes]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 2:
            raise KeyFileError(f"{where}: expected '<key-id> <base64 of 32 bytes>'")
        key_id, encoded = fields
        if not KEY_ID.fullmatch(key_id):
            raise KeyFileError(
                f"{where}: a key id is 1 to 32 letters, digits, '.', '_' or '-' "
                "and comes before the key"
            )
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise KeyFileError(f"{where}: key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"{where}: key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
        if any(key_id == known for known, _ in keys):
            raise KeyFileError(f"{where}: key id {key_id!r} is used twice")
        keys.append((key_id, key))
    if not keys:
        raise KeyFileError(f"{path}: no keys")
    return Keyring(keys)


def sealer(path: str | None) -> Sealer:
    """A sealer with the keys of ``path`` that SIGHUP can reload; off when None."""
    if path is None:
        return Sealer()
    return Sealer(load(path), functools.partial(load, path))


def new_line(key_id: str | None = None) -> str:
    """A key file line: ``key_id`` (default: k + the UTC time) and 32 random bytes."""
    key_id = key_id or time.strftime("k%Y%m%d-%H%M%S", time.gmtime())
    if not KEY_ID.fullmatch(key_id):
        raise ValueError("a key id is 1 to 32 letters, digits, '.', '_' or '-'")
    return f"{key_id} {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"
