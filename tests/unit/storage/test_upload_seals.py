"""storage/upload_seals.py: what a sealed resumable upload records opens only in place."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import xxhash

from storage.crypto import Keyring, KeyUnavailable, Sealer
from storage.errors import Corrupt
from storage.hashing import XXH3
from storage.upload_seals import (
    digest_place,
    dump_facts,
    load_facts,
    open_digests,
    open_tail,
    record_digest,
    seal_tail,
)
from storage.uploads import UploadFacts, UploadState

SEALER = Sealer(Keyring([("k1", bytes(range(32)))]))
VID = "c" * 32
FACTS = UploadFacts("scan/1", VID, 100, 3600, "application/dicom", 8, False, True)


def test_facts_keep_the_content_type_sealed_and_the_rest_in_clear() -> None:
    stored = dump_facts(SEALER, "ns", FACTS)
    assert "dicom" not in stored
    assert json.loads(stored)["vid"] == VID  # the scripts and the tests read it
    assert UploadFacts(**load_facts(SEALER, "ns", stored)) == FACTS
    plain = dataclasses.replace(FACTS, encrypted=False)
    assert UploadFacts(**load_facts(Sealer(), "ns", dump_facts(Sealer(), "ns", plain))) == plain


@pytest.mark.parametrize(
    "change",
    [{"key": "scan/2"}, {"size": 101}, {"chunk_size": 16}, {"vid": "d" * 32}],
)
def test_facts_edited_in_clear_or_moved_do_not_open(change: dict[str, object]) -> None:
    fields = json.loads(dump_facts(SEALER, "ns", FACTS)) | change
    with pytest.raises(Corrupt):
        load_facts(SEALER, "ns", json.dumps(fields))
    with pytest.raises(Corrupt):
        load_facts(SEALER, "other", dump_facts(SEALER, "ns", FACTS))
    with pytest.raises(KeyUnavailable, match="'k1'"):
        load_facts(Sealer(), "ns", dump_facts(SEALER, "ns", FACTS))


def digests(count: int, width: int = 16) -> list[bytes]:
    return [os.urandom(width) for _ in range(count)]


@pytest.mark.parametrize("sealer", [SEALER, None])
@pytest.mark.parametrize("width", [16, 20])  # xxh3-128; SHA-1 of an older server's uploads
def test_the_digest_list_opens_entry_by_entry_in_order(sealer: Sealer | None, width: int) -> None:
    shas = digests(4, width)
    recorded = b"".join(record_digest(sealer, "ns", VID, i, sha) for i, sha in enumerate(shas))
    assert open_digests(sealer, "ns", VID, recorded, width) == shas
    assert open_digests(sealer, "ns", VID, b"", width) == []
    if sealer is not None:
        assert not any(sha in recorded for sha in shas)
    # Cut inside an entry, the list does not split into whole entries.
    with pytest.raises(Corrupt):
        open_digests(sealer, "ns", VID, recorded[: 3 * width + 1], width)


def test_a_digest_list_reordered_cut_or_altered_is_corrupt() -> None:
    entries = [record_digest(SEALER, "ns", VID, i, sha) for i, sha in enumerate(digests(3))]
    whole = b"".join(entries)
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 1
    for damaged in (
        entries[1] + entries[0] + entries[2],  # swapped
        whole[:-1],  # cut
        bytes(flipped),
        b"".join(record_digest(SEALER, "ns", "d" * 32, i, bytes(16)) for i in range(3)),
    ):
        with pytest.raises(Corrupt):
            open_digests(SEALER, "ns", VID, damaged, 16)
    # A sealed entry of the wrong size (another check's) is damaged too.
    with pytest.raises(Corrupt):
        open_digests(SEALER, "ns", VID, whole, 20)


@pytest.mark.asyncio
@pytest.mark.parametrize("sealer", [SEALER, None])
async def test_a_partial_chunk_and_its_digest_round_trip(sealer: Sealer | None) -> None:
    tail = os.urandom(5)
    digest, stored = await seal_tail(sealer, "ns", VID, 2, "tok", memoryview(tail), XXH3)
    state = UploadState(FACTS, 2, b"", "tok", 5, digest, 0.0)
    opened, expected = open_tail(sealer, "ns", VID, state, bytes(stored), 16)
    assert (opened, expected) == (tail, xxhash.xxh3_128_digest(tail))
    assert open_tail(sealer, "ns", VID, state, None, 16)[0] is None
    if sealer is not None:
        assert tail not in bytes(stored) and expected not in digest
        # Another attachment's token, or another chunk index: not this partial chunk.
        with pytest.raises(Corrupt):
            open_tail(
                sealer, "ns", VID, dataclasses.replace(state, tail="other"), bytes(stored), 16
            )
        with pytest.raises(Corrupt):
            open_tail(sealer, "ns", VID, dataclasses.replace(state, chunks=1), bytes(stored), 16)


def test_a_digest_place_names_its_chunk() -> None:
    assert digest_place("ns", VID, 7).describe() == "the checksum of chunk 7"
