"""Free TCP ports for tests, below the kernel's ephemeral range.

``bind(0)`` hands out a port from the ephemeral range, which every outgoing
connection also draws its source port from. A test that stops a server and
starts it again on the same port (a Valkey restart, a cluster node), or that
counts on nothing listening there, can then lose the port to another test's
connection: make test runs its two halves at once. Ports below that range
are handed out only on request.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection

#: The lowest port handed out; the highest is just below the ephemeral range.
LOWEST = 10_000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; other systems' ranges start higher


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, also: int = 0, taken: Collection[int] = ()) -> int:
    """A port free now, below the ephemeral range; with ``also``, port + ``also``
    too (a cluster node's bus); never one of ``taken``."""
    rng = random.Random()
    highest = _ephemeral_low() - 1 - also
    for _ in range(200):
        port = rng.randint(LOWEST, highest)
        wanted = {port, port + also}
        if not wanted & set(taken) and all(_bindable(each) for each in wanted):
            return port
    raise RuntimeError("no free port below the ephemeral range")
