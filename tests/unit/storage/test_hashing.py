"""storage/hashing.py: chunk checksums by their names, on or off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest
import xxhash

from storage import hashing
from storage.errors import Corrupt
from storage.hashing import SHA1, XXH3, chunk_digest, chunk_digest_of, digest_size


def test_each_check_is_its_algorithm_and_its_size() -> None:
    data = os.urandom(1000)
    assert chunk_digest(memoryview(data), XXH3) == xxhash.xxh3_128_digest(data)
    assert chunk_digest(bytearray(data), SHA1) == hashlib.sha1(data).digest()
    assert hashing.CHECK == XXH3  # what new versions and uploads record
    assert (digest_size(XXH3), digest_size(SHA1)) == (16, 20)


def test_a_check_nobody_knows_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="md6"):
        chunk_digest(b"x", "md6")
    with pytest.raises(Corrupt, match="md6"):
        digest_size("md6")


@pytest.mark.parametrize(
    ("check", "size", "threaded"),
    [
        (XXH3, hashing.THREAD_XXH3_MIN - 1, False),
        (XXH3, hashing.THREAD_XXH3_MIN, True),
        (SHA1, hashing.THREAD_HASH_MIN - 1, False),
        (SHA1, hashing.THREAD_HASH_MIN, True),
    ],
)
def test_large_chunks_are_checked_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch, check: str, size: int, threaded: bool
) -> None:
    seen: list[bool] = []
    real = hashing.chunk_digest

    def spy(data: memoryview, check: str) -> bytes:
        seen.append(threading.current_thread() is threading.main_thread())
        return real(data, check)

    monkeypatch.setattr(hashing, "chunk_digest", spy)
    data = os.urandom(size)
    assert asyncio.run(chunk_digest_of(data, check)) == real(data, check)
    assert seen == [not threaded]


def test_a_version_id_is_32_lowercase_hex_digits_new_every_time() -> None:
    vids = {hashing.new_vid() for _ in range(1000)}
    assert len(vids) == 1000
    for vid in vids:
        assert len(vid) == 32
        assert set(vid) <= set("0123456789abcdef")
