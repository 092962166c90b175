"""storage/store.py internals a user would only see as wrong bytes on the Valkey socket."""

from __future__ import annotations

from typing import Any

import pytest
from valkey.asyncio.connection import Connection

from storage.store import PACK_IN_C_MAX, _writing_pieces

Ours = _writing_pieces(Connection)


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k/é"),
        ("SET", b"k", b"v" * 100, "PX", 900_000),
        ("EVALSHA", "ab" * 20, 2, "{ns}:m", "c:1", memoryview(b"xyz" * 1000)[5:2005], -1),
        ("CONFIG GET", "maxmemory"),
        (b"SCRIPT LOAD", "return 1"),
        ("SET", "k", b"\x00\r\n" * 7000),  # larger than valkey-py's 6000-byte cutoff
        ("SET", "k", memoryview(bytes(PACK_IN_C_MAX + 1))),  # valkey-py's packer
        ("SET", "k", 1.5),  # a float: valkey-py's packer
    ],
)
def test_packed_commands_are_the_bytes_valkey_py_sends(args: tuple[Any, ...]) -> None:
    ours, theirs = Ours(), Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))


def test_a_chunk_sized_value_is_not_copied_into_the_command() -> None:
    value = memoryview(bytes(8 * 1024 * 1024))
    packed = Ours().pack_command("SET", "c:1", value, "PX", 1000)
    assert any(part is value for part in packed)
