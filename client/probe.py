"""``valise ping`` on one blocking socket: no event loop, so no asyncio to import.

A probe is what people type first and what health checks run often, so its
start-up is most of its time, and asyncio (with what the async client pulls
in) was most of that start-up (issue 21). The probe speaks the same frames
through the same sans-IO codec (client/wire.py), greets as every client does
(client/greeting.py) and fails with the errors, messages and hints of
client/connection.py: connecting follows ``asyncio``'s ``create_connection``
(every address in turn, one deadline for connecting and the TLS handshake,
the same words for a refusal), and a later read may be silent for at most
``--timeout`` seconds. ``ssl`` is imported only when a TLS option is given.
It never retries: a probe answers for now.
"""

from __future__ import annotations

import argparse
import select
import socket
import time
from typing import TYPE_CHECKING, Any

from . import greeting, tls, wire
from .console import EXIT_OK, UsageError, parse_server, print_json
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    ProtocolError,
    RequestTimeout,
    ValiseError,
    error_from_wire,
)
from .wire import Frame, FrameType

if TYPE_CHECKING:
    import ssl

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """HELLO then PING on a new connection; prints the round trip, exit code 0."""
    try:
        host, port = parse_server(args.server)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    context = tls.from_args(args)  # imports ssl only when a TLS option is given
    started = time.perf_counter()
    link = _Link.open(host, port, args.timeout, context)
    try:
        server = link.greet("valise-cli", args.token)
        reply = link.request(FrameType.PING, {"t": time.time()})
        ms = (time.perf_counter() - started) * 1000
    finally:
        link.close()
    if args.json:
        print_json({"reply": reply, "server": server, "ms": ms})
    elif not args.quiet:
        print(f"pong from {server.get('server', 'server')} at {host}:{port} in {ms:.1f} ms")
    return EXIT_OK


class _Expired(Exception):
    """The deadline for connecting passed."""


def _numeric(host: str, port: int) -> list[tuple[Any, ...]]:
    """An IP address as asyncio takes it, without the resolver (its first call costs ms)."""
    if "%" not in host:  # a scope id needs getaddrinfo
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(family, host)
            except OSError:
                continue
            address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
    return []


def _connect(host: str, port: int, deadline: float) -> socket.socket:
    """A connected socket; each address in turn, failing with asyncio's words."""
    infos = _numeric(host, port) or socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("getaddrinfo() returned empty list")
    errors: list[OSError] = []
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            try:
                sock.connect(address)
            except (BlockingIOError, InterruptedError):
                left = deadline - time.monotonic()
                if left <= 0 or not any(select.select([], [sock], [sock], left)):
                    raise _Expired() from None
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"Connect call failed {address}") from None
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    if all(str(exc) == str(errors[0]) for exc in errors):
        raise errors[0]
    raise OSError("Multiple exceptions: " + ", ".join(str(exc) for exc in errors))


def _handshake(
    sock: socket.socket, context: ssl.SSLContext, host: str, deadline: float
) -> socket.socket:
    """The TLS socket over ``sock``, its handshake done before ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired()
    sock.settimeout(left)
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


class _Link:
    """One connection speaking frames, each read and write bounded by ``timeout``.

    As in client/connection.py, a failed write is reported by the read that
    follows it, after any reply the server managed to send.
    """

    def __init__(self, sock: socket.socket, timeout: float, tls: bool) -> None:
        self._sock = sock
        self._timeout = timeout
        self._tls = tls
        #: A TLS peer gone without a close_notify: asyncio reads it as the end of the stream.
        self._ragged: tuple[type[OSError], ...] = ()
        if tls:
            import ssl  # imported already, by the context

            self._ragged = (ssl.SSLEOFError,)
        self._decoder = wire.FrameDecoder()
        self._heard = False
        self._eof = False
        self._error: OSError | None = None

    @classmethod
    def open(cls, host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> _Link:
        """Connect (and shake hands) within ``timeout``, which then bounds every read and write."""
        deadline = time.monotonic() + timeout
        try:
            sock = _connect(host, port, deadline)
            if context is not None:
                sock = _handshake(sock, context, host, deadline)
        except (_Expired, socket.timeout) as exc:
            raise ConnectionFailed(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:  # ssl.SSLError is one
            error = ConnectionFailed(f"cannot connect to {host}:{port}: {exc}")
            if context is not None:
                tls.hint(error, exc)
            raise error from exc
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout, context is not None)

    def greet(self, client_name: str, token: str | None) -> dict[str, Any]:
        """HELLO; the server's reply (its name, version, limits, features)."""
        try:
            return self.request(FrameType.HELLO, greeting.body(client_name, token))
        except ValiseError as exc:
            greeting.explain(exc, token=token is not None, tls=self._tls, heard=self._heard)
            raise

    def request(self, ftype: FrameType, body: dict[str, Any]) -> dict[str, Any]:
        """Send one control frame; the OK body, or the ERROR raised as its exception."""
        self._send(wire.encode_control(ftype, body))
        frame = self._read_frame()
        if frame.type is FrameType.OK:
            return frame.json()
        if frame.type is FrameType.ERROR:
            raise error_from_wire(frame.json())
        raise ProtocolError(f"expected OK or ERROR, got {frame.type.name}")

    def _send(self, parts: list[wire.Bytes]) -> None:
        """Header and payload as two writes, as asyncio's transport makes them."""
        if self._error is not None:
            raise ConnectionLost("connection dropped while sending")
        try:
            for part in parts:
                self._sock.sendall(part)
        except socket.timeout as exc:
            raise RequestTimeout("server stopped reading (write timed out)") from exc
        except OSError as exc:
            self._failed(exc)

    def _read_frame(self) -> Frame:
        decoder = self._decoder
        while True:
            frame = decoder.next_frame()
            if frame is not wire.NEED_DATA:
                assert isinstance(frame, Frame)
                return frame
            if self._error is not None:
                raise ConnectionLost(f"connection dropped: {self._error}") from self._error
            if self._eof:
                partial = decoder.buffered
                detail = f" in the middle of a frame ({partial} bytes)" if partial else ""
                raise ConnectionLost(f"server closed the connection{detail}")
            try:
                received = self._sock.recv_into(decoder.get_buffer())
            except socket.timeout as exc:
                limit = self._timeout
                raise RequestTimeout(f"no reply from the server within {limit} s") from exc
            except OSError as exc:
                self._failed(exc)
                continue
            if received:
                decoder.buffer_updated(received)
                self._heard = True
            else:
                self._eof = True

    def _failed(self, exc: OSError) -> None:
        if isinstance(exc, self._ragged):
            self._eof = True
        else:
            self._error = exc

    def close(self) -> None:
        self._sock.close()
