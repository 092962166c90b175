"""storage/info.py: a FileInfo is a frozen dataclass to its callers, however it is built."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import compact_json
from storage.hashing import SHA1, XXH3
from storage.info import FileInfo

FIELDS = {
    "key": "scans/0001.dcm",
    "size": 4096,
    "sha1": "a" * 40,
    "content_type": "application/dicom",
    "chunk_size": 1 << 20,
    "chunks": 1,
    "created_at": 1764797000.125,
    "expires_at": 1764800600.125,
    "vid": "ab" * 16,
    "encrypted": True,
    "check": XXH3,
}


def test_every_field_is_set_from_its_argument_by_name_and_by_position() -> None:
    names = [field.name for field in dataclasses.fields(FileInfo)]
    assert names == list(FIELDS)  # the __init__ covers every field, no more
    by_name = FileInfo(**FIELDS)  # type: ignore[arg-type]
    by_position = FileInfo(*FIELDS.values())  # type: ignore[arg-type]
    for info in (by_name, by_position):
        assert dataclasses.asdict(info) == FIELDS
        assert vars(info) == FIELDS
        assert [getattr(info, name) for name in names] == list(FIELDS.values())


def test_defaults_equality_hash_and_repr_are_the_dataclasses() -> None:
    fields = {name: value for name, value in FIELDS.items() if name not in ("encrypted", "check")}
    info = FileInfo(**fields)  # type: ignore[arg-type]
    assert (info.encrypted, info.check) == (False, SHA1)
    same = FileInfo(**fields)  # type: ignore[arg-type]
    assert info == same and hash(info) == hash(same) and len({info, same}) == 1
    assert info != dataclasses.replace(info, size=4095)
    assert info != dataclasses.astuple(info)  # type: ignore[comparison-overlap]
    assert repr(info).startswith("FileInfo(key='scans/0001.dcm', size=4096, sha1='aaaa")
    assert repr(info).endswith("encrypted=False, check='sha1')")


def test_it_is_immutable() -> None:
    info = FileInfo(**FIELDS)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.size = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del info.key
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.other = 1  # type: ignore[attr-defined]
    assert dataclasses.replace(info, chunks=2).chunks == 2 and info.chunks == 1


def test_a_missing_or_unknown_field_is_refused_as_before() -> None:
    fields = dict(FIELDS)
    del fields["vid"]
    with pytest.raises(TypeError, match="vid"):
        FileInfo(**fields)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="colour"):
        FileInfo(**FIELDS, colour="red")  # type: ignore[arg-type, call-arg]


def test_the_stored_form_is_unchanged() -> None:
    info = FileInfo(**(FIELDS | {"encrypted": False}))  # type: ignore[arg-type]
    assert info.dumps() == (
        '{"key":"scans/0001.dcm","size":4096,"sha1":"' + "a" * 40 + '",'
        '"content_type":"application/dicom","chunk_size":1048576,"chunks":1,'
        '"created_at":1764797000.125,"expires_at":1764800600.125,'
        '"vid":"' + "ab" * 16 + '","check":"xxh3-128"}'
    )
    stored = compact_json.loads(info.dumps())
    assert FileInfo(**stored) == info
