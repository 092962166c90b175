"""A resumable upload's state in Valkey, sealed when the upload is encrypted.

With ``--encryption-key-file`` a resumable upload keeps nothing in clear that
a chunk's bytes or a guess of them could be checked against (issue 19,
docs/decisions/0012-encryption-at-rest.md): its chunks and its partial last
chunk are sealed like any version's (the partial one for the place of the
chunk it becomes), and so is what the upload's state records of them:

- each chunk's checksum in the ``ud:`` list is sealed alone, for the place of
  that chunk's digest, and APPENDed as it is recorded: the list is a run of
  self-delimiting sealed values (:func:`open_digests` splits it);
- the partial chunk's checksum is sealed for its chunk's place and the token of
  the attachment that wrote it;
- the upload's facts seal the content type and a tus upload's metadata; the rest stays in clear (the
  scripts and a RESUME's answer need them) and is bound as associated data.

An upload is encrypted or not for good, decided by its PUT (``encrypted`` in
its facts): a RESUME after encryption was turned on or off goes on as it
began, or, when the key is not loaded, fails ``unavailable`` naming the key.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from storage.crypto import (
    NONCE_BYTES,
    TAG_BYTES,
    VERSION,
    Place,
    Sealer,
    chunk_place,
    seal_and_digest,
)
from storage.errors import Corrupt
from storage.hashing import chunk_digest_of, off_loop

if TYPE_CHECKING:
    from storage.uploads import UploadFacts, UploadState

#: What the facts seal: the content type, and a tus upload's metadata and sha1.
SEALED_FACTS = ("content_type", "tus")


def facts_place(namespace: str, fields: dict[str, Any]) -> Place:
    """The facts' sealed part also vouches for the facts kept in clear."""
    clear = [fields[name] for name in ("key", "size", "ttl", "chunk_size", "if_absent")]
    detail = json.dumps(clear, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return Place(b"upload", namespace, fields["vid"], detail=detail)


def digest_place(namespace: str, vid: str, index: int, token: str = "") -> Place:
    """Chunk ``index``'s checksum; with ``token``, the partial chunk's that it wrote."""
    return Place(b"digest", namespace, vid, index, detail=token.encode())


def dump_facts(sealer: Sealer, namespace: str, facts: UploadFacts) -> str:
    """The facts as the upload's state keeps them."""
    if not facts.encrypted:
        return facts.dumps()
    fields = json.loads(facts.dumps())
    secret = json.dumps({name: fields.pop(name) for name in SEALED_FACTS}).encode()
    sealed = sealer.seal(facts_place(namespace, fields), secret)
    fields["sealed"] = base64.b64encode(sealed).decode()
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def load_facts(sealer: Sealer, namespace: str, raw: bytes | str) -> dict[str, Any]:
    """The fields of the facts :func:`dump_facts` stored; the sealed ones opened."""
    fields: dict[str, Any] = json.loads(raw)
    sealed = fields.pop("sealed", None)
    if sealed is None:
        return fields
    place = facts_place(namespace, fields)
    damaged = Corrupt(f"integrity check failed (encrypted): {place.describe()}")
    try:
        secret = json.loads(sealer.open(place, base64.b64decode(sealed, validate=True)))
    except (binascii.Error, ValueError):
        raise damaged from None
    if not isinstance(secret, dict) or set(secret) != set(SEALED_FACTS):
        raise damaged
    return {**fields, **secret}


def seal_digest(sealer: Sealer | None, place: Place, digest: bytes) -> bytes:
    """A checksum as the upload's state records it (unchanged when not encrypted)."""
    if sealer is None:
        return digest
    return bytes(sealer.seal(place, digest))


def record_digest(sealer: Sealer | None, namespace: str, vid: str, index: int, sha: bytes) -> bytes:
    """Chunk ``index``'s checksum as the ``ud:`` list records it."""
    return seal_digest(sealer, digest_place(namespace, vid, index), sha)


def open_digest(sealer: Sealer | None, place: Place, recorded: bytes, width: int) -> bytes:
    """The checksum (``width`` bytes) :func:`seal_digest` recorded."""
    if sealer is None:
        return recorded
    digest = bytes(sealer.open(place, recorded))
    if len(digest) != width:
        raise Corrupt(f"integrity check failed (encrypted): {place.describe()}")
    return digest


def open_digests(
    sealer: Sealer | None, namespace: str, vid: str, recorded: bytes, width: int
) -> list[bytes]:
    """The chunk checksums (``width`` bytes each) of the ``ud:`` list, in order;
    :class:`Corrupt` when it does not split into whole entries."""
    entries: list[bytes] = []
    at = 0
    while at < len(recorded):
        if sealer is None:
            size = width
        elif recorded[at] != VERSION or at + 2 > len(recorded):
            raise Corrupt("the upload's chunk digests are damaged")
        else:
            size = 2 + recorded[at + 1] + NONCE_BYTES + width + TAG_BYTES
        if at + size > len(recorded):
            raise Corrupt("the upload's chunk digests are damaged")
        entries.append(recorded[at : at + size])
        at += size
    return [
        open_digest(sealer, digest_place(namespace, vid, index), entry, width)
        for index, entry in enumerate(entries)
    ]


def open_chunk(
    sealer: Sealer, namespace: str, vid: str, index: int, chunk: memoryview
) -> memoryview:
    """A stored chunk ``index`` a RESUME read back, opened (its tag checked)."""
    return memoryview(sealer.open(chunk_place(namespace, vid, index), chunk))


async def seal_tail(
    sealer: Sealer | None,
    namespace: str,
    vid: str,
    index: int,
    token: str,
    tail: memoryview,
    check: str,
) -> tuple[bytes, memoryview]:
    """A partial chunk ``index`` written by attachment ``token``: its checksum by
    ``check`` as recorded and the chunk as stored (sealed for the place of the
    chunk it becomes)."""
    if sealer is None:
        return await chunk_digest_of(tail, check), tail
    place = chunk_place(namespace, vid, index)
    sealed, sha = await off_loop(len(tail), seal_and_digest, sealer, place, tail, check)
    return seal_digest(sealer, digest_place(namespace, vid, index, token), sha), sealed


def open_tail(
    sealer: Sealer | None,
    namespace: str,
    vid: str,
    state: UploadState,
    stored: bytes | bytearray | None,
    width: int,
) -> tuple[bytes | bytearray | None, bytes]:
    """The partial chunk a RESUME found (None: gone) and the checksum recorded for it."""
    place = digest_place(namespace, vid, state.chunks, state.tail)
    expected = open_digest(sealer, place, state.tail_sha1, width)
    if sealer is None or stored is None:
        return stored, expected
    # Opened on the event loop: less than a chunk, and a RESUME's last step.
    return sealer.open(chunk_place(namespace, vid, state.chunks), stored), expected
