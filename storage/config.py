"""What storage/ needs to know of the server's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StorageConfig:
    url: str
    chunk_size: int
    staging_ttl: int
    grace: int
    timeout: float = 30.0
    max_connections: int = 64
    allow_persistence: bool = False
    #: CA bundle for a valkeys:// URL (TLS to Valkey).
    tls_ca: str | None = None
    #: ``url`` names one node of a Valkey Cluster (docs/decisions/0006).
    cluster: bool = False
    #: Cluster only: seconds an idempotent command keeps retrying a failover.
    failover_wait: float = 10.0
    #: Seconds a resumable upload waits for a RESUME (docs/protocol.md section 6.1).
    resume_ttl: int = 3600
    #: Seconds change events are kept at least (the event stream's TTL).
    event_retention: int = 3600
    #: Seal what Valkey holds with these keys (storage/crypto.py); None: off.
    encryption_key_file: str | None = None
