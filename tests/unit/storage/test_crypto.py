"""storage/crypto.py: sealed values open only at their place, under a loaded key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from storage.crypto import (
    MAX_OVERHEAD,
    PIECE,
    Keyring,
    KeyUnavailable,
    Sealer,
    chunk_place,
    clear_info,
    digests_place,
    open_and_digest,
    seal_and_digest,
)
from storage.errors import Corrupt
from storage.hashing import SHA1, XXH3
from storage.info import FileInfo

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(32, 64)))
HERE = chunk_place("ns", "a" * 32, 3)


def sealer(*keys: tuple[str, bytes]) -> Sealer:
    return Sealer(Keyring(keys or (K1,)))


def info(**changes: object) -> FileInfo:
    fields: dict[str, object] = {
        "key": "scan/1",
        "size": 10,
        "sha1": "ab" * 20,
        "content_type": "application/dicom",
        "chunk_size": 8,
        "chunks": 2,
        "created_at": 1.5,
        "expires_at": 3601.5,
        "vid": "b" * 32,
        "encrypted": True,
    }
    return FileInfo(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 4096, PIECE, PIECE + 1, 3 * PIECE + 17])
def test_a_value_opens_to_its_bytes_and_holds_none_of_them(size: int) -> None:
    data = os.urandom(size)
    stored = bytes(sealer().seal(HERE, data))
    assert len(stored) <= size + MAX_OVERHEAD
    assert bytes(sealer().open(HERE, stored)) == data
    if size >= 16:
        assert data[:16] not in stored
        assert data[-16:] not in stored


def test_every_seal_draws_a_new_nonce() -> None:
    s = sealer()
    assert s.seal(HERE, b"same bytes") != s.seal(HERE, b"same bytes")


@pytest.mark.parametrize(
    "elsewhere",
    [
        chunk_place("ns", "a" * 32, 4),  # another index of the same file
        chunk_place("ns", "c" * 32, 3),  # the same index of another file
        chunk_place("other", "a" * 32, 3),  # another namespace
        digests_place("ns", "a" * 32),  # another kind of value
    ],
)
@pytest.mark.parametrize("size", [100, 2 * PIECE + 5])
def test_a_value_moved_to_another_place_is_corrupt(elsewhere: object, size: int) -> None:
    stored = sealer().seal(HERE, os.urandom(size))
    with pytest.raises(Corrupt, match="integrity"):
        sealer().open(elsewhere, stored)  # type: ignore[arg-type]


@given(st.data())
def test_any_change_to_a_stored_value_is_corrupt(data: st.DataObject) -> None:
    plain = data.draw(st.binary(min_size=0, max_size=600))
    stored = bytearray(sealer().seal(HERE, plain))
    damage = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if damage == "flip":
        at = data.draw(st.integers(0, len(stored) - 1))
        stored[at] ^= 1 << data.draw(st.integers(0, 7))
    elif damage == "truncate":
        del stored[data.draw(st.integers(0, len(stored) - 1)) :]
    else:
        stored += data.draw(st.binary(min_size=1, max_size=20))
    # Never bytes: corrupt, or (a bit flipped in the key id) a key that is not loaded.
    with pytest.raises((Corrupt, KeyUnavailable)):
        sealer(K1, ("k", bytes(32))).open(HERE, stored)


def test_a_large_value_with_a_flipped_bit_or_a_new_nonce_is_corrupt() -> None:
    stored = bytearray(sealer().seal(HERE, os.urandom(3 * PIECE)))
    flipped = bytearray(stored)
    flipped[-PIECE] ^= 0x80
    renonced = bytearray(stored)
    renonced[4 : 4 + 12] = os.urandom(12)
    for bad in (flipped, renonced, stored[:-1]):
        with pytest.raises(Corrupt):
            sealer().open(HERE, bad)


def test_the_first_key_seals_and_every_key_opens() -> None:
    by_k1 = sealer(K1).seal(HERE, b"old file")
    rotated = sealer(K2, K1)
    by_k2 = rotated.seal(HERE, b"new file")
    assert bytes(by_k2[2:4]) == b"k2"
    assert bytes(rotated.open(HERE, by_k1)) == b"old file"
    assert bytes(rotated.open(HERE, by_k2)) == b"new file"
    with pytest.raises(KeyUnavailable) as gone:
        sealer(K2).open(HERE, by_k1)
    assert gone.value.message == "the file is encrypted with key 'k1', which is not loaded"
    assert gone.value.code == "unavailable"


def test_encryption_off_refuses_a_sealed_value_and_says_why() -> None:
    stored = sealer().seal(HERE, b"bytes")
    with pytest.raises(KeyUnavailable, match=r"'k1'.*without --encryption-key-file"):
        Sealer().open(HERE, stored)


def test_a_swapped_key_id_never_opens() -> None:
    stored = bytearray(sealer(K1).seal(HERE, b"bytes"))
    stored[2:4] = b"k2"  # a loaded key, but not the one that sealed it
    with pytest.raises(Corrupt):
        sealer(K1, K2).open(HERE, stored)


def test_a_key_id_that_is_not_plain_is_never_echoed() -> None:
    stored = bytearray(sealer().seal(HERE, b"bytes"))
    stored[2:4] = b"\n!"
    with pytest.raises(Corrupt) as bad:
        sealer().open(HERE, stored)
    assert "\n" not in bad.value.message


def test_the_stored_info_keeps_sha1_and_content_type_sealed() -> None:
    s = sealer()
    stored = s.dumps("ns", info())
    assert "ab" * 20 not in stored
    assert "dicom" not in stored
    assert json.loads(stored)["size"] == 10  # the usage metric sums it in Lua
    assert s.loads("ns", stored) == info()
    assert clear_info(stored) == info(sha1="", content_type=None)


@pytest.mark.parametrize(
    ("field", "value"), [("key", "scan/2"), ("size", 9), ("chunks", 1), ("vid", "c" * 32)]
)
def test_an_info_edited_in_clear_or_moved_is_corrupt(field: str, value: object) -> None:
    s = sealer()
    stored = json.loads(s.dumps("ns", info()))
    stored[field] = value
    with pytest.raises(Corrupt, match="file info"):
        s.loads("ns", json.dumps(stored))


def test_an_info_in_another_namespace_or_with_bad_base64_is_corrupt() -> None:
    s = sealer()
    stored = s.dumps("ns", info())
    assert s.loads("ns", stored, "scan/1") == info()
    with pytest.raises(Corrupt):
        s.loads("ns", stored, "scan/2")  # found under another key: moved there
    with pytest.raises(Corrupt):
        s.loads("other", stored)
    broken = json.loads(stored)
    broken["sealed"] = "not base64!"
    with pytest.raises(Corrupt):
        s.loads("ns", json.dumps(broken))


def test_a_plaintext_info_is_stored_and_read_as_before() -> None:
    plain = info(encrypted=False)
    assert sealer().dumps("ns", plain) == plain.dumps()
    assert sealer().loads("ns", plain.dumps()) == plain
    assert Sealer().loads("ns", plain.dumps()) == plain


@pytest.mark.parametrize(
    ("check", "digest"),
    [(XXH3, xxhash.xxh3_128_digest), (SHA1, lambda data: hashlib.sha1(data).digest())],
)
def test_the_worker_helpers_check_the_plaintext(
    check: str, digest: Callable[[memoryview], bytes]
) -> None:
    data = memoryview(os.urandom(PIECE + 3))
    fed: list[memoryview] = []
    stored, sha = seal_and_digest(sealer(), HERE, data, check, fed.append)
    assert sha == digest(data)
    assert fed == [data]
    plain, again = open_and_digest(sealer(), HERE, stored, check)
    assert (bytes(plain), again) == (bytes(data), sha)


def test_a_keyring_never_shows_its_keys() -> None:
    ring = Keyring([K1, K2])
    assert repr(ring) == "Keyring(k1, k2)"
    assert base64.b64encode(K1[1]).decode() not in repr(ring)
    with pytest.raises(ValueError, match="unique"):
        Keyring([K1, ("k1", K2[1])])
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring([("k1", bytes(16))])
