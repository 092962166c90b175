"""storage/lane.py: the valkey-py internals the lean script path relies on.

The lean path reads replies through a connection's parser and takes
connections from the pool without its checkout; an upgrade that reshapes
either fails here rather than as a server that cannot run a script.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
import valkey.asyncio as valkey_async
from hypothesis import given
from hypothesis import strategies as st
from valkey._parsers import _AsyncLibvalkeyParser
from valkey.asyncio.connection import Connection, DefaultParser

from storage.clients import _writing_pieces, single_client
from storage.config import StorageConfig
from storage.lane import (
    BATCH_BYTES,
    PACK_IN_C_MAX,
    LeanScript,
    LeanValkey,
    _Batch,
    _packed,
    _prepare,
)


def _size(command: tuple[Any, ...]) -> int:
    return _prepare(command)[1]


def test_the_pool_hands_out_connections_without_waiting() -> None:
    pool: Any = valkey_async.BlockingConnectionPool(max_connections=1)
    assert pool.can_get_connection()
    connection = pool.get_available_connection()
    assert not pool.can_get_connection()  # the bound holds on this path too
    assert inspect.iscoroutinefunction(pool.release)
    assert connection.is_connected is False
    assert hasattr(connection, "_reader") and hasattr(connection, "_parser")


@pytest.mark.asyncio
async def test_replies_are_read_by_libvalkey_and_error_replies_are_returned() -> None:
    # read_response on the parser returns an error reply (it does not raise it).
    assert DefaultParser is _AsyncLibvalkeyParser
    assert inspect.iscoroutinefunction(_AsyncLibvalkeyParser.read_response)
    # _ready looks at the StreamReader's buffer to find unread bytes.
    assert hasattr(asyncio.StreamReader(), "_buffer")


def test_a_single_node_store_registers_lean_scripts() -> None:
    config = StorageConfig(url="valkey://127.0.0.1:1/0", chunk_size=1024, staging_ttl=60, grace=0)
    client = single_client(config)
    assert isinstance(client, LeanValkey)
    script = client.register_script("return 1")
    assert isinstance(script, LeanScript)
    assert client.lane.timeout == config.timeout


def test_a_batch_closes_at_its_byte_bound_counting_buffers_and_strings() -> None:
    half = memoryview(bytes(BATCH_BYTES // 2 + 1))
    batch = _Batch()
    first = ("EVALSHA", "sha", 2, "meta", "index", half, b"digest", 900, 1.5)
    assert not batch.full(_size(first))
    waiter: Any = object()  # a caller's future: only kept
    batch.add(first, waiter, _size(first))
    assert batch.full(_size(("EVALSHA", "sha", 0, half)))  # a second half does not fit
    assert not batch.full(_size(("EVALSHA", "sha", 0, "x" * 1000)))
    assert _size(("SET", "k", bytearray(10), 7, 0.5)) == len("SET") + 1 + 10


#: Arguments of every type a lane command may carry: those packed in C, and
#: those left to the connection's packer (a float, a large value).
_ARGS = st.one_of(
    st.text(),
    st.binary(max_size=300),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.binary(max_size=300).map(lambda b: memoryview(b)),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(memoryview(bytes(PACK_IN_C_MAX + 1))),
    st.just(memoryview(bytes(PACK_IN_C_MAX))),
)
_NAMES = st.sampled_from(["EVALSHA", "GET", "CONFIG GET", b"SCRIPT LOAD", b"SET"])


@given(st.lists(st.tuples(_NAMES, st.lists(_ARGS, max_size=20)), min_size=1, max_size=5))
def test_a_batch_goes_out_as_the_bytes_valkey_py_would_send(
    commands: list[tuple[Any, list[Any]]],
) -> None:
    """Packed by _prepare or by the connection, a batch's bytes are valkey-py's
    own packer's, command after command."""
    ours, theirs = _writing_pieces(Connection)(), Connection()
    full = [(name, *args) for name, args in commands]
    prepared = [_prepare(command)[0] for command in full]
    expected = b"".join(piece for command in full for piece in theirs.pack_command(*command))
    assert b"".join(_packed(ours, prepared)) == expected


def test_a_small_command_is_packed_at_once_a_large_value_is_not_copied() -> None:
    packed, size = _prepare(("EVALSHA", "ab" * 20, 1, "m", b"v" * 4096, 900))
    assert type(packed) is bytes and size == len("EVALSHA") + 40 + 1 + 4096
    value = memoryview(bytes(PACK_IN_C_MAX + 1))
    command = ("EVALSHA", "ab" * 20, 1, "m", value, 900)
    assert _prepare(command)[0] is command
    assert any(piece is value for piece in _packed(Connection(), [command]))
