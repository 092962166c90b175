"""Unit tests for storage/uploads.py and storage/keys.py: a resumable upload's state."""

from __future__ import annotations

from storage import keys
from storage.resumable import new_upload_id
from storage.uploads import UploadFacts, UploadState


def test_facts_survive_the_round_trip_through_valkey() -> None:
    facts = UploadFacts("patients/Zoë/t1.nii", "v" * 32, None, 600, "application/x-nifti", 65536)
    assert UploadFacts.loads(facts.dumps().encode()) == facts


def test_offset_counts_whole_chunks_and_the_partial_one() -> None:
    facts = UploadFacts("k", "v", 10_000, 60, None, 4096)
    state = UploadState(facts, 2, b"\0" * 40, "t0k3n", 100, b"\0" * 20, 1.0)
    assert state.offset == 2 * 4096 + 100


def test_upload_keys_stay_in_the_namespace_slot_and_apart() -> None:
    ns = keys.NamespaceKeys("radi{ology}")
    names = {ns.upload("d:x"), ns.upload_digests("x"), ns.meta("x"), ns.uploads.encode()}
    assert len(names) == 4
    assert all(name.startswith(ns.tag.encode() + b":") for name in names)
    assert keys.partial_key("vid", "a") != keys.chunk_key("vid", 0)


def test_upload_ids_are_long_random_and_urlsafe() -> None:
    ids = {new_upload_id() for _ in range(100)}
    assert len(ids) == 100
    for upload_id in ids:
        assert 32 <= len(upload_id) <= 128
        assert upload_id.replace("-", "").replace("_", "").isalnum()
