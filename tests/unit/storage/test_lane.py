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
from valkey._parsers import _AsyncLibvalkeyParser
from valkey.asyncio.connection import DefaultParser

from storage.clients import single_client
from storage.config import StorageConfig
from storage.lane import BATCH_BYTES, LeanScript, LeanValkey, _Batch, _size


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
