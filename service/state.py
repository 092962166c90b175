"""What every connection of one server process shares, passed in, never reached for.

A connection gets a :class:`ServerState` (uvicorn's ``ServerState``), not the
``Server``: no import circle, and a connection is testable without a server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol.frames import PROTOCOL_VERSION
from protocol.state import FEATURES
from service.access import AccessLog
from service.attachments import Attachments
from service.auth import FailureDelay, Tokens
from service.config import Config
from service.events import EventHub
from service.metrics import Metrics
from service.parked import Parked
from service.peer import LINGER_BYTES as LINGER_BYTES
from service.peer import LINGER_IDLE as LINGER_IDLE
from service.peer import LINGER_TOTAL as LINGER_TOTAL
from service.peer import READ_SIZE as READ_SIZE
from storage import Store

VERSION = "0.1.0"

#: Seconds the last bytes (the ERROR's tail) may take to leave once the
#: lingering close is over; then the socket is aborted.
FLUSH_AFTER_ERROR = 1.0


class Served(Protocol):
    """What the server needs to know of a connection it holds."""

    #: True while a request or upload is in progress (shutdown waits for it).
    busy: bool


@dataclass(eq=False)
class ServerState:
    config: Config
    store: Store
    tokens: Tokens | None = None
    metrics: Metrics = field(default_factory=Metrics)
    auth_failures: FailureDelay = field(default_factory=FailureDelay)
    access: AccessLog = field(init=False)
    #: The change events' feeds of this process (docs/protocol.md section 6.3).
    events: EventHub = field(init=False)
    #: Set at shutdown: idle connections end, new ones are refused.
    closing: bool = False
    #: Connections counted against --max-connections (not the lingering ones).
    connections: dict[asyncio.Task[None], Served] = field(default_factory=dict)
    #: Connections in their lingering close, at most --max-connections.
    lingering: int = 0
    #: The revision-2 features this server offers (HELLO's ``features``).
    #: Revision-2 features served (docs/protocol.md section 6): all the protocol knows.
    features: frozenset[str] = FEATURES
    #: Resumable uploads held by this process's connections (section 6.1).
    attachments: Attachments = field(default_factory=Attachments)
    #: tus uploads between two requests (docs/http.md section 7).
    parked: Parked = field(default_factory=Parked)

    def __post_init__(self) -> None:
        self.access = AccessLog(log_keys=self.config.log_keys)
        self.events = EventHub(self.store.events, self.metrics)

    def hello(self) -> dict[str, Any]:
        c = self.config
        return {
            "server": f"valise/{VERSION}",
            "version": PROTOCOL_VERSION,
            "max_frame": c.max_frame,
            "chunk_size": c.chunk_size,
            "max_file_size": c.max_file_size,
            "default_ttl": c.default_ttl,
            "max_ttl": c.max_ttl,
            "features": sorted(self.features),
        }

    def forget(self, connection: Served) -> None:
        """A lingering close no longer counts against --max-connections."""
        for task, known in list(self.connections.items()):
            if known is connection:
                del self.connections[task]
