"""Start-up refusals: a Valkey that would evict chunks or write scans to disk.

Checked on every node (of a cluster, every primary and replica) before the
server accepts a connection; each refusal says what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.config import StorageConfig
from storage.errors import MisconfiguredValkey

#: CONFIG GET at start-up, on every node.
CHECKED_CONFIG = (
    "maxmemory-policy",
    "save",
    "appendonly",
    "proto-max-bulk-len",
    "repl-diskless-sync",
    "repl-diskless-load",
)


def check_config(settings: StorageConfig, config: dict[str, str]) -> None:
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        raise MisconfiguredValkey(
            f"Valkey maxmemory-policy is {policy!r}: eviction would silently delete chunks "
            "of stored files. Set it to 'noeviction'."
        )
    persistent = config.get("save", "") != "" or config.get("appendonly", "no") == "yes"
    if persistent and not settings.allow_persistence:
        raise MisconfiguredValkey(
            "Valkey persistence is on (save or appendonly): scans would be written to disk. "
            "Turn it off, or pass --allow-persistence."
        )
    max_bulk = int(config.get("proto-max-bulk-len", str(512 * 1024 * 1024)))
    if settings.chunk_size > max_bulk:
        raise MisconfiguredValkey(
            f"--chunk-size {settings.chunk_size} exceeds Valkey proto-max-bulk-len {max_bulk}"
        )


def check_replication(
    settings: StorageConfig, config: dict[str, str], replication: dict[str, Any]
) -> None:
    """A primary with replicas, or a replica, must sync through memory, not an RDB file."""
    replicated = replication.get("role") == "slave" or int(replication.get("connected_slaves", 0))
    on_disk = config.get("repl-diskless-sync", "yes") != "yes" or (
        config.get("repl-diskless-load", "disabled") == "disabled"
    )
    if replicated and on_disk and not settings.allow_persistence:
        raise MisconfiguredValkey(
            "Valkey replication goes through an RDB file on disk: scans would be written "
            "to disk. Set repl-diskless-sync yes and repl-diskless-load on-empty-db "
            "on every node, or pass --allow-persistence."
        )


def decode_map(raw: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


def has_room(nodes: Sequence[tuple[int, int]], size: int) -> bool:
    """Room for ``size`` bytes, given (used, maxmemory) per primary.

    Chunks spread over every primary, so a cluster has room while the free
    memory of all its primaries adds up to the upload, and no primary is full
    (a full one refuses every chunk that hashes to it). No maxmemory: no limit.
    """
    limited = [(used, limit) for used, limit in nodes if limit]
    if any(used >= limit for used, limit in limited):
        return False
    free = sum(limit - used for used, limit in limited)
    return not limited or size < free
