"""Accepting connections for a door: the listen socket, TLS, the PROXY header.

Every door (the binary protocol, HTTP) gets its connections from a
:class:`Listener` as ``(reader, writer, peer)``, where ``peer`` is the client's
address: the socket's, or with ``--proxy-protocol`` the one a trusted
balancer's PROXY header names (docs/deployment.md). Connections from
anywhere else than ``--trusted-proxies`` are then refused, and so is one
whose header is missing or malformed.

TLS certificates are reloadable (:class:`Certificates`): the listening
context keeps its settings, and its SNI callback, which OpenSSL calls for
every handshake (with or without a server name), hands the handshake to the
newest context loaded. New connections get a new certificate; connections
already open keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from protocol.proxy import ProxyError, ProxyReader
from service.config import Config

log = logging.getLogger("valise")


@dataclass(frozen=True, slots=True)
class Peer:
    """The client's address as the server sees it (after a PROXY header, the real one)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def of(cls, address: Any) -> Peer:
        if isinstance(address, tuple) and len(address) >= 2:
            return cls(str(address[0]), int(address[1]))
        return cls(str(address or "?"), 0)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Peer], Awaitable[None]]


class Certificates:
    """The listener's TLS context, whose certificate and CA files SIGHUP reloads."""

    def __init__(self, config: Config) -> None:
        self._config = config
        context = config.tls_context()
        assert context is not None, "Certificates needs --tls-cert"
        self._current = context
        self.listening = config.tls_context()
        assert self.listening is not None
        self.listening.sni_callback = self._choose

    def _choose(self, connection: Any, server_name: str | None, _: ssl.SSLContext) -> None:
        connection.context = self._current
        return None

    def reload(self) -> bool:
        """Read the files again; on any error keep the current ones and say why."""
        try:
            context = self._config.tls_context()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS certificate not reloaded, the old one stays: %s", exc)
            return False
        assert context is not None
        self._current = context
        log.info("TLS certificate reloaded")
        return True


def _networks(config: Config) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(text.strip())
        for text in (config.trusted_proxies or "").split(",")
        if text.strip()
    )


class Listener:
    """One listening socket and the connections it hands to ``handler``."""

    def __init__(
        self,
        config: Config,
        handler: Handler,
        *,
        certificates: Certificates | None,
        backlog: int,
        limit: int,
    ) -> None:
        self.config = config
        self.handler = handler
        self.certificates = certificates
        self.backlog = backlog
        self.limit = limit
        self._server: asyncio.Server | None = None
        self._socket: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._trusted = _networks(config)

    @property
    def _tls(self) -> ssl.SSLContext | None:
        return self.certificates.listening if self.certificates else None

    @property
    def _handshake_timeout(self) -> float | None:
        return self.config.idle_timeout if self.certificates else None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        if self.config.proxy_protocol:
            return await self._start_proxied(host, port)
        self._server = await asyncio.start_server(
            self._direct,
            host,
            port,
            limit=self.limit,
            backlog=self.backlog,
            ssl=self._tls,
            ssl_handshake_timeout=self._handshake_timeout,
            # --workers: every worker listens on the same port; the kernel spreads connections.
            reuse_port=self.config.workers > 1,
        )
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    def close(self) -> None:
        """Stop accepting; connections already handed over are the door's to end."""
        if self._server is not None:
            self._server.close()
        for task in self._handshakes:
            task.cancel()
        sock, self._socket = self._socket, None
        if self._accepting is not None:
            self._accepting.cancel()
            if sock is not None:
                # Only once the pending accept has let go of it (uvloop: EBUSY).
                self._accepting.add_done_callback(lambda _: sock.close())
        elif sock is not None:
            sock.close()

    async def _direct(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.handler(reader, writer, Peer.of(writer.get_extra_info("peername")))

    # -- with the PROXY protocol ---------------------------------------------

    async def _start_proxied(self, host: str, port: int) -> tuple[str, int]:
        """Our own accept loop: the header is read from the raw socket, byte-exact,
        before TLS or the door sees a byte (a buffered stream would swallow the
        client's first bytes with it)."""
        loop = asyncio.get_running_loop()
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server(
            (host, port),
            family=family,
            backlog=self.backlog,
            reuse_port=self.config.workers > 1,
        )
        sock.setblocking(False)
        self._socket = sock
        self._accepting = loop.create_task(self._accept_forever(sock))
        address = sock.getsockname()
        return str(address[0]), int(address[1])

    async def _accept_forever(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listening)
            except OSError as exc:  # out of descriptors, a reset before accept
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._proxied(sock, Peer.of(address)))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _proxied(self, sock: socket.socket, proxy: Peer) -> None:
        sock.setblocking(False)
        try:
            if not self._is_trusted(proxy.host):
                log.warning("refused a connection from %s: not in --trusted-proxies", proxy.host)
                sock.close()
                return
            try:
                async with asyncio.timeout(self.config.frame_timeout):
                    header = await _read_header(sock)
            except (ProxyError, TimeoutError, ConnectionError, OSError) as exc:
                log.warning("refused a connection from %s: PROXY header: %s", proxy.host, exc)
                sock.close()
                return
            peer = Peer.of(header) if header is not None else proxy
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=self.limit, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except BaseException:
            sock.close()
            raise
        # The door's own task from here on: shutdown no longer cancels it as a handshake.
        task = asyncio.current_task()
        if task is not None:
            self._handshakes.discard(task)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        await self.handler(reader, writer, peer)

    def _is_trusted(self, host: str) -> bool:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            return any(address in network for network in self._trusted)
        return False


async def _read_header(sock: socket.socket) -> tuple[str, int] | None:
    """The client address of a PROXY header, read without a byte past its end."""
    loop = asyncio.get_running_loop()
    reader = ProxyReader()
    while reader.header is None:
        data = await loop.sock_recv(sock, reader.wanted())
        if not data:
            raise ConnectionError("closed before the PROXY header ended")
        reader.feed(data)
    return reader.header.source
