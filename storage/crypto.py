"""Encryption at rest: Valkey holds only AES-256-GCM ciphertext (docs/security.md).

With ``--encryption-key-file`` every value Valise stores that carries file
content or could confirm a guess of it is *sealed* before it leaves the
process and *opened* after it comes back: the chunks, the per-chunk SHA-1
list, and the file info's SHA-1 and content type. Key names, sizes and times
stay in clear (LIST orders by key; the usage metric sums sizes in Lua).

The API, for every writer of a stored value (resumable uploads' partial
chunks included)::

    place = chunk_place(namespace, vid, index)    # or digests_place, info_place
    stored = sealer.seal(place, plaintext)         # a memoryview to hand Valkey
    plain = sealer.open(place, stored)             # Corrupt on any tampering

``seal`` draws a fresh random 96-bit nonce every call, never a counter: a
partial chunk rewritten whole on a resume, a retried SET or a rewritten tail
is just sealed again under the same place. ``open`` refuses a value stored
at any other place (another file, another index, another namespace, a digest
list passed off as a chunk) because the place is the associated data.
Large values are sealed in pieces of :data:`PIECE` bytes: ``cryptography``
holds the GIL while it encrypts, so a piece at a time keeps the event loop
running while a worker thread seals a chunk (:func:`off_loop`).

A sealed value is ``version (1 byte) | key id length (1) | key id | nonce (12)
| ciphertext | tag (16)``; the associated data is those first bytes followed
by the place. Each value names its key, so files written before a rotation
stay readable while their key is still in the file.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol import compact_json
from protocol.errors import ErrorCode
from storage.errors import Corrupt, StorageError
from storage.hashing import chunk_digest
from storage.info import FileInfo

T = TypeVar("T")

#: The sealed value format this module writes and reads.
VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
#: Key ids: short, plain, never mistaken for a key (a base64 key has '=', '+' or '/').
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
#: The most a sealed value adds to its plaintext.
MAX_OVERHEAD = 2 + 32 + NONCE_BYTES + TAG_BYTES
#: Bytes encrypted per call with the GIL held (about 0.1 ms each).
PIECE = 256 * 1024

_LENGTH = struct.Struct("!I")
_INDEX = struct.Struct("!Q")


class KeyUnavailable(StorageError):
    """A stored value is sealed under a key this server has not loaded.

    ``unavailable``, not ``corrupt``: the bytes are fine, and the same request
    succeeds once the operator loads the key again (SIGHUP). The message
    names the key id and nothing else.
    """

    code = ErrorCode.UNAVAILABLE


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Where a sealed value belongs; its bytes are the associated data."""

    #: What the value is: b"chunk", b"digests", b"info"; a resumable upload's
    #: b"digest" and b"upload" (storage/upload_seals.py).
    what: bytes
    namespace: str
    vid: str
    index: int = 0
    #: Anything else the value vouches for (the info's fields kept in clear).
    detail: bytes = b""

    def aad(self) -> bytes:
        parts = (b"valise", self.what, self.namespace.encode(), self.vid.encode(), self.detail)
        return b"".join(_LENGTH.pack(len(p)) + p for p in parts) + _INDEX.pack(self.index)

    def describe(self) -> str:
        if self.what == b"chunk":
            return f"chunk {self.index}"
        if self.what == b"digest":  # a resumable upload's (storage/upload_seals.py)
            return f"the checksum of chunk {self.index}"
        names = {b"digests": "the chunk checksums", b"info": "the file info"}
        return names.get(self.what, "the upload's facts")


def chunk_place(namespace: str, vid: str, index: int) -> Place:
    return Place(b"chunk", namespace, vid, index)


def digests_place(namespace: str, vid: str) -> Place:
    return Place(b"digests", namespace, vid)


def info_place(namespace: str, info: FileInfo) -> Place:
    """The info's sealed part also vouches for its key and the fields that say
    which chunks to read, so an info moved to another key, or a size edited
    in clear, fails to open."""
    clear = [info.key, info.size, info.chunk_size, info.chunks]
    detail = json.dumps(clear, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return Place(b"info", namespace, info.vid, detail=detail)


class Keyring:
    """Loaded keys: the first seals, every one opens. Its repr shows ids only."""

    __slots__ = ("_aead", "_keys", "ids")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key_id, key in keys:
            if not KEY_ID.fullmatch(key_id) or len(key) != KEY_BYTES:
                raise ValueError("a key id must match KEY_ID and a key be 32 bytes")
        self.ids = tuple(key_id for key_id, _ in keys)
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("key ids must be unique")
        self._keys = dict(keys)
        self._aead = {key_id: AESGCM(key) for key_id, key in keys}

    @property
    def primary(self) -> str:
        return self.ids[0]

    def aead(self, key_id: str) -> AESGCM | None:
        """The one-shot cipher of ``key_id``, or None when it is not loaded."""
        return self._aead.get(key_id)

    def stream(self, key_id: str, mode: modes.GCM) -> Cipher[modes.GCM]:
        """A piece-at-a-time cipher of ``key_id`` (a loaded one)."""
        return Cipher(algorithms.AES(self._keys[key_id]), mode)

    def __repr__(self) -> str:
        return f"Keyring({', '.join(self.ids)})"


class Sealer:
    """Seals and opens stored values; off (no keyring) it only refuses sealed ones.

    The keyring is replaced whole by :meth:`reload` (SIGHUP); a seal or open
    in a worker thread uses the keyring it started with.
    """

    def __init__(
        self, keyring: Keyring | None = None, load: Callable[[], Keyring] | None = None
    ) -> None:
        self.keyring = keyring
        #: Reads the key file again (:func:`storage.keyfile.sealer`).
        self._load = load

    def reload(self) -> Keyring | None:
        """Load the keys again; when that raises, the old keys stay."""
        if self._load is not None:
            self.keyring = self._load()
        return self.keyring

    @property
    def encrypting(self) -> bool:
        return self.keyring is not None

    # -- values ---------------------------------------------------------

    def seal(self, place: Place, data: bytes | bytearray | memoryview) -> memoryview:
        """``data`` sealed for ``place`` under the first key, with a fresh nonce."""
        keyring = self.keyring
        if keyring is None:
            raise AssertionError("seal() called with encryption off")
        key_id = keyring.primary
        header = bytes((VERSION, len(key_id))) + key_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        aad = header + place.aad()
        size = len(data)
        start = len(header) + NONCE_BYTES
        out = bytearray(start + size + TAG_BYTES)
        out[: len(header)] = header
        out[len(header) : start] = nonce
        if size <= PIECE:
            aead = keyring.aead(key_id)
            assert aead is not None
            out[start:] = aead.encrypt(nonce, data, aad)
            return memoryview(out)
        encryptor = keyring.stream(key_id, modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(aad)
        source = memoryview(data).cast("B")
        view = memoryview(out)
        for at in range(0, size, PIECE):
            piece = source[at : at + PIECE]
            # The tag's room after the ciphertext is the slack update_into asks for.
            encryptor.update_into(piece, view[start + at : start + at + len(piece) + 15])
        encryptor.finalize()
        view[start + size :] = encryptor.tag
        return view

    def open(self, place: Place, value: bytes | bytearray | memoryview) -> bytes | bytearray:
        """The plaintext of a value sealed for ``place``.

        :class:`Corrupt` when the value was altered, truncated, moved or
        sealed for another place; :class:`KeyUnavailable` when its key is not
        loaded (or encryption is off).
        """
        view = memoryview(value).cast("B")
        key_id = _key_id(view, place)
        keyring = self.keyring
        if keyring is None:
            raise KeyUnavailable(
                f"the file is encrypted (key {key_id!r}) and this server runs "
                "without --encryption-key-file"
            )
        aead = keyring.aead(key_id)
        if aead is None:
            raise KeyUnavailable(f"the file is encrypted with key {key_id!r}, which is not loaded")
        header = 2 + len(key_id)
        start = header + NONCE_BYTES
        size = len(view) - start - TAG_BYTES
        if size < 0:
            raise _tampered(place)
        nonce = bytes(view[header:start])
        aad = bytes(view[:header]) + place.aad()
        try:
            if size <= PIECE:
                return aead.decrypt(nonce, view[start:], aad)
            tag = bytes(view[start + size :])
            decryptor = keyring.stream(key_id, modes.GCM(nonce, tag)).decryptor()
            return _open_pieces(decryptor, aad, view[start : start + size])
        except InvalidTag:
            raise _tampered(place) from None

    # -- file info ------------------------------------------------------

    def stored_forms(self, namespace: str, info: FileInfo) -> tuple[str, str | None]:
        """The info as stored, and its sealed part (base64; None for a plaintext
        version): the commit's change event carries the same sealed part."""
        if not info.encrypted:
            return info.dumps(), None
        secret = json.dumps({"sha1": info.sha1, "content_type": info.content_type})
        sealed = base64.b64encode(self.seal(info_place(namespace, info), secret.encode())).decode()
        stored: dict[str, Any] = {
            "key": info.key,
            "size": info.size,
            "chunk_size": info.chunk_size,
            "chunks": info.chunks,
            "created_at": info.created_at,
            "expires_at": info.expires_at,
            "vid": info.vid,
            "check": info.check,
            "sealed": sealed,
        }
        return compact_json.dumps_str(stored), sealed

    def dumps(self, namespace: str, info: FileInfo) -> str:
        """The info as stored: an encrypted version's SHA-1 and content type sealed."""
        return self.stored_forms(namespace, info)[0]

    def loads(self, namespace: str, raw: bytes | str, key: str | None = None) -> FileInfo:
        """The info as clients see it; an encrypted version's sealed part opened.

        With ``key`` (the key it was found under), an encrypted info that names
        another key is :class:`Corrupt`: it was moved there.
        """
        stored = compact_json.loads(raw)
        sealed = stored.pop("sealed", None)
        if sealed is None:
            return FileInfo(**stored)
        info = FileInfo(sha1="", content_type=None, encrypted=True, **stored)
        if key is not None and info.key != key:
            raise _tampered(info_place(namespace, info))
        sha1, content_type = self.open_info(namespace, info, sealed)
        return dataclasses.replace(info, sha1=sha1, content_type=content_type)

    def open_info(self, namespace: str, info: FileInfo, sealed: Any) -> tuple[str, str | None]:
        """The SHA-1 and content type that ``sealed`` (an info's or a stored
        event's sealed part) holds for ``info``, the fields kept in clear."""
        place = info_place(namespace, info)
        try:
            secret = json.loads(self.open(place, base64.b64decode(sealed, validate=True)))
            return str(secret["sha1"]), secret["content_type"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise _tampered(place) from None


def clear_info(raw: bytes | str) -> FileInfo:
    """What a stored info says in clear, sealed part unopened (SHA-1 empty): enough
    to free a version's keys, whatever keys are loaded."""
    stored = json.loads(raw)
    if stored.pop("sealed", None) is None:
        return FileInfo(**stored)
    return FileInfo(sha1="", content_type=None, encrypted=True, **stored)


def seal_and_digest(
    sealer: Sealer,
    place: Place,
    data: memoryview,
    check: str,
    feed: Callable[[memoryview], Any] | None = None,
) -> tuple[memoryview, bytes]:
    """Upload side, in one worker thread: ``data``'s checksum by ``check`` and its
    sealed form (``feed`` first gets ``data``: the whole file's running SHA-1)."""
    if feed is not None:
        feed(data)
    return sealer.seal(place, data), chunk_digest(data, check)


def open_and_digest(
    sealer: Sealer, place: Place, value: bytes | bytearray | memoryview, check: str
) -> tuple[bytes | bytearray, bytes]:
    """Download side, in one worker thread: the plaintext and its checksum by ``check``."""
    plain = sealer.open(place, value)
    return plain, chunk_digest(memoryview(plain), check)


def _key_id(view: memoryview, place: Place) -> str:
    if len(view) < 2 or view[0] != VERSION or len(view) < 2 + view[1]:
        raise _tampered(place)
    try:
        key_id = bytes(view[2 : 2 + view[1]]).decode("ascii")
    except UnicodeDecodeError:
        raise _tampered(place) from None
    if not KEY_ID.fullmatch(key_id):
        # Never echo what Valkey holds unless it is a plain key id.
        raise _tampered(place)
    return key_id


def _open_pieces(decryptor: Any, aad: bytes, body: memoryview) -> bytearray:
    """Decrypt a large value a piece at a time (the GIL is let go between pieces);
    the tag is checked before the plaintext is returned."""
    size = len(body)
    decryptor.authenticate_additional_data(aad)
    out = bytearray(size)
    view = memoryview(out)
    for at in range(0, size, PIECE):
        piece = body[at : min(at + PIECE, size)]
        if at + len(piece) + 15 <= size:
            decryptor.update_into(piece, view[at : at + len(piece) + 15])
        else:  # no slack left after the last piece: one small copy
            view[at : at + len(piece)] = decryptor.update(piece)
    decryptor.finalize()
    return out


def _tampered(place: Place) -> Corrupt:
    return Corrupt(f"integrity check failed (encrypted): {place.describe()}")
