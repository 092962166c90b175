"""storage/clients.py: what it sends, and the valkey-py internals it relies on.

A valkey-py upgrade that renames or reshapes a private name the patches use
fails here, not as wrong bytes on the Valkey socket or a pool that no longer
blocks in production.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import valkey
import valkey.asyncio.cluster as valkey_cluster
from valkey.asyncio.connection import Connection

from storage import clients
from storage.clients import _writing_pieces
from storage.lane import PACK_IN_C_MAX

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


# -- the private names of valkey-py the patches rely on -----------------------


def test_valkey_py_is_the_version_the_patches_were_written_for() -> None:
    # requirements.txt pins it; move this line only after rereading clients.py.
    assert valkey.__version__ == "6.2.0"


def test_connection_internals_the_piece_writer_overrides() -> None:
    # send_packed_command(command, check_health=True) and pack_command(*args) are
    # overridden; _writer, is_connected, connect, check_health, disconnect are used.
    params = list(inspect.signature(Connection.send_packed_command).parameters)
    assert params == ["self", "command", "check_health"]
    assert list(inspect.signature(Connection.pack_command).parameters) == ["self", "args"]
    for name in ("connect", "check_health", "disconnect"):
        assert inspect.iscoroutinefunction(getattr(Connection, name)), name
    assert "nowait" in inspect.signature(Connection.disconnect).parameters
    connection = Connection()
    assert hasattr(connection, "_writer")
    assert connection.is_connected is False


def test_cluster_node_internals_the_lifo_node_overrides() -> None:
    node = valkey_cluster.ClusterNode("127.0.0.1", 1, max_connections=2)
    assert node._free is not None and hasattr(node._free, "pop")
    assert list(inspect.signature(node.acquire_connection).parameters) == []
    # NodesManager builds its nodes from the module-level name we replace.
    source = inspect.getsource(valkey_cluster.NodesManager)
    assert "ClusterNode(" in source


def test_cluster_client_uses_the_lifo_node_and_our_connections() -> None:
    from storage.config import StorageConfig

    client = clients.cluster_client(
        StorageConfig(url="valkey://127.0.0.1:1", chunk_size=1024, staging_ttl=10, grace=1)
    )
    assert valkey_cluster.ClusterNode is clients._LifoClusterNode
    kwargs = client.nodes_manager.connection_kwargs
    assert issubclass(kwargs["connection_class"], clients._PieceWriter)
    assert kwargs["socket_read_size"] == clients.READ_SIZE
