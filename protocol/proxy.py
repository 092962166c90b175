"""The PROXY protocol, versions 1 and 2: the client's address from a load balancer, sans-IO.

A balancer (HAProxy, nginx, AWS NLB, ...) that forwards a TCP connection
first sends one header naming the client it forwards. Without it every
client has the balancer's address, and what is keyed on the address (the
access log, the failed-token delay) is keyed on the balancer.

Only the header is parsed here; what follows it is the client's own stream
(binary frames, HTTP, or a TLS handshake) and is never read by this module.
The reader is fed the bytes it asks for, so it never consumes a byte past
the header: :meth:`ProxyReader.wanted` says how many more it needs.

Version 1 is one text line: ``PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n``
(or ``TCP6``, or ``PROXY UNKNOWN ...\\r\\n``), at most 107 bytes. Version 2
is binary: a 12-byte signature, a version/command byte, a family byte, a
u16 length, then the addresses (and TLVs, which we skip). A ``LOCAL``
command (the balancer's own health check) or an ``UNKNOWN``/``UNSPEC``
family carries no client: the connection keeps its socket address.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

#: Version 2's signature: it cannot start an HTTP request, a TLS handshake or a frame.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: Bytes that tell the two versions apart (both prefixes are 6 bytes long).
PROBE = 6
#: Version 1's longest line, CRLF included (its specification's number).
V1_MAX = 107
#: Version 2's address block and TLVs: more is refused (a hostile length).
V2_MAX_BODY = 2048
_V2_FIXED = struct.Struct("!12sBBH")
_V4 = struct.Struct("!4s4sHH")
_V6 = struct.Struct("!16s16sHH")


class ProxyError(Exception):
    """The bytes are not a valid PROXY header; the connection is refused."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    #: The client's (host, port); None when the header names none (LOCAL, UNKNOWN).
    source: tuple[str, int] | None


class ProxyReader:
    """Feed it exactly :meth:`wanted` bytes at a time until :attr:`header` is set."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need = PROBE
        self._version = 0
        self.header: ProxyHeader | None = None

    def wanted(self) -> int:
        """How many more bytes to read; 0 once the header is complete."""
        return 0 if self.header is not None else self._need - len(self._buffer)

    def feed(self, data: bytes) -> None:
        if len(data) > self.wanted():
            raise ValueError("fed more than wanted()")  # our bug, not the peer's
        self._buffer += data
        if self.wanted() == 0:
            self._step()

    def _step(self) -> None:
        buffer = bytes(self._buffer)
        if self._version == 0:
            if buffer == V1_PREFIX:
                self._version, self._need = 1, len(buffer) + 1
            elif buffer == V2_SIGNATURE[:PROBE]:
                self._version, self._need = 2, _V2_FIXED.size
            else:
                raise ProxyError("expected a PROXY protocol header")
        elif self._version == 1:
            if buffer.endswith(b"\r\n"):
                self.header = _parse_v1(buffer)
            elif len(buffer) >= V1_MAX:
                raise ProxyError("PROXY v1 line longer than 107 bytes")
            else:
                self._need += 1  # a text line: one byte at a time, never past its end
        elif len(buffer) == _V2_FIXED.size:
            signature, _, _, length = _V2_FIXED.unpack(buffer)
            if signature != V2_SIGNATURE:
                raise ProxyError("bad PROXY v2 signature")
            if length > V2_MAX_BODY:
                raise ProxyError("PROXY v2 header too long")
            self._need += length
            if length == 0:
                self.header = _parse_v2(buffer)
        else:
            self.header = _parse_v2(buffer)


def _parse_v1(line: bytes) -> ProxyHeader:
    try:
        text = line[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1 line is not ASCII") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(None)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyError("PROXY v1 line: expected 'PROXY TCP4|TCP6 src dst sport dport'")
    _, family, source, destination, sport, dport = parts
    version = 4 if family == "TCP4" else 6
    for address in (source, destination):
        try:
            if ipaddress.ip_address(address).version != version:
                raise ValueError
        except ValueError:
            raise ProxyError(f"PROXY v1 line: not an IPv{version} address") from None
    _port(dport)
    return ProxyHeader((source, _port(sport)))


def _port(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyError("PROXY v1 line: bad port")
    return int(text)


def _parse_v2(header: bytes) -> ProxyHeader:
    _, version_command, family, length = _V2_FIXED.unpack_from(header)
    body = header[_V2_FIXED.size :]
    if version_command >> 4 != 2:
        raise ProxyError("PROXY v2: unknown version")
    command = version_command & 0x0F
    if command == 0x0:  # LOCAL: the balancer itself speaking (a health check)
        return ProxyHeader(None)
    if command != 0x1:
        raise ProxyError("PROXY v2: unknown command")
    if family == 0x11:  # TCP over IPv4
        if length < _V4.size:
            raise ProxyError("PROXY v2: address block too short")
        source, _, sport, _ = _V4.unpack_from(body)
        return ProxyHeader((str(ipaddress.IPv4Address(source)), sport))
    if family == 0x21:  # TCP over IPv6
        if length < _V6.size:
            raise ProxyError("PROXY v2: address block too short")
        source, _, sport, _ = _V6.unpack_from(body)
        return ProxyHeader((str(ipaddress.IPv6Address(source)), sport))
    if family >> 4 == 0:  # UNSPEC: no address to take
        return ProxyHeader(None)
    raise ProxyError("PROXY v2: only TCP over IPv4 or IPv6 is accepted")


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A version 1 header (for tests and tools)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (
        f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
    ).encode()


def encode_v2(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A version 2 header; ``source`` None makes a LOCAL one (for tests and tools)."""
    if source is None:
        return _V2_FIXED.pack(V2_SIGNATURE, 0x20, 0x00, 0)
    if destination is None:
        destination = ("::", 0) if ":" in source[0] else ("0.0.0.0", 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    block = (_V4 if src.version == 4 else _V6).pack(
        src.packed, dst.packed, source[1], destination[1]
    )
    family = 0x11 if src.version == 4 else 0x21
    return _V2_FIXED.pack(V2_SIGNATURE, 0x21, family, len(block)) + block
