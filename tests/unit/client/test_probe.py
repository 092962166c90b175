"""Unit tests for client/probe.py without a socket: how an address is taken.

The probe's conversations with servers (and with peers that are none) are in
tests/integration/test_cli.py and tests/integration/test_cli_messages.py.
"""

from __future__ import annotations

import socket

import pytest

from client.probe import _numeric


def test_an_ip_address_is_used_as_is_as_asyncio_does() -> None:
    assert _numeric("127.0.0.1", 7070) == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 7070))
    ]
    # IPv6: the 4-tuple asyncio names in "Connect call failed ('::1', 7070, 0, 0)".
    assert _numeric("::1", 7070)[0][4] == ("::1", 7070, 0, 0)


@pytest.mark.parametrize("host", ["localhost", "scanner.example", "fe80::1%eth0", "1.2.3"])
def test_names_and_scoped_addresses_go_to_the_resolver(host: str) -> None:
    assert _numeric(host, 7070) == []
