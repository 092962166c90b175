"""Behind a balancer: PROXY v1/v2 headers from trusted and untrusted addresses, with TLS too."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

from protocol.frames import FrameType
from protocol.proxy import encode_v1, encode_v2
from service.auth import Tokens
from tests.support.harness import Running, make_config, start_server, stop_server
from tests.support.wire import WireClient, control

pytestmark = pytest.mark.asyncio

CLIENT = ("203.0.113.9", 40001)
OTHER = ("198.51.100.20", 50002)
HEADERS = {
    "v1": lambda source: encode_v1(source, ("127.0.0.1", 7070)),
    "v2": lambda source: encode_v2(source, ("127.0.0.1", 7070)),
}


async def proxied(
    running: Running, header: bytes, *, ssl_context: ssl.SSLContext | None = None
) -> WireClient:
    """Connect as a balancer would: the header first, then the client's own stream."""
    reader, writer = await asyncio.open_connection(running.host, running.port)
    writer.write(header)
    await writer.drain()
    if ssl_context is not None:
        await writer.start_tls(ssl_context, server_hostname="127.0.0.1")
    return WireClient(reader, writer)


@pytest_asyncio.fixture
async def behind(valkey_server: Any) -> AsyncIterator[Running]:
    config = make_config(proxy_protocol=True, trusted_proxies="10.0.0.0/8, 127.0.0.1")
    running = await start_server(valkey_server.url, config)
    yield running
    await stop_server(running)


async def refused(reader: asyncio.StreamReader) -> bool:
    """Closed without a byte of answer (a reset, when our bytes were left unread)."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


def access_peers(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [json.loads(r.getMessage())["peer"] for r in caplog.records if r.name == "valise.access"]


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_the_header_names_the_client(
    behind: Running, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise.access")
    client = await proxied(behind, HEADERS[version](CLIENT))
    assert (await client.request(FrameType.PING, {"n": 1})).body == {"n": 1}
    await client.close()
    assert access_peers(caplog) == ["203.0.113.9:40001"]


async def test_a_local_header_keeps_the_balancers_address(
    behind: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise.access")
    client = await proxied(behind, encode_v2(None))  # the balancer's own health check
    assert (await client.request(FrameType.PING, {})).ok
    await client.close()
    assert [p.split(":")[0] for p in access_peers(caplog)] == ["127.0.0.1"]


@pytest.mark.parametrize(
    "stream",
    [
        control(FrameType.PING, {}),  # no header at all
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n" + control(FrameType.PING, {}),
        b"PROXY " + b"x" * 200,
    ],
    ids=["missing", "malformed", "too-long"],
)
async def test_a_missing_or_bad_header_is_refused(behind: Running, stream: bytes) -> None:
    reader, writer = await asyncio.open_connection(behind.host, behind.port)
    writer.write(stream)
    assert await refused(reader)
    writer.close()
    # Others are served meanwhile.
    client = await proxied(behind, HEADERS["v2"](CLIENT))
    assert (await client.request(FrameType.PING, {})).ok
    await client.close()


async def test_connections_from_an_untrusted_address_are_refused(valkey_server: Any) -> None:
    config = make_config(proxy_protocol=True, trusted_proxies="10.0.0.0/8")
    running = await start_server(valkey_server.url, config)
    try:
        reader, writer = await asyncio.open_connection(running.host, running.port)
        writer.write(encode_v1(CLIENT, ("127.0.0.1", 7070)) + control(FrameType.PING, {}))
        assert await refused(reader)
        writer.close()
    finally:
        await stop_server(running)


async def test_failed_tokens_are_counted_per_real_client(
    valkey_server: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    path.write_text("good-secret radiology rw\n")
    config = make_config(proxy_protocol=True, trusted_proxies="127.0.0.1")
    running = await start_server(valkey_server.url, config, Tokens.load(path))
    running.server.auth_failures.base = 0.01
    try:
        for source, token in [(CLIENT, "guess-1"), (CLIENT, "guess-2"), (OTHER, "good-secret")]:
            client = await proxied(running, HEADERS["v2"](source))
            await client.request(FrameType.HELLO, {"version": 1, "token": token})
            await client.close()
        failures = running.server.auth_failures
        # Keyed on the client the balancer named, and the other client's success reset nothing.
        assert set(failures._recent) == {"203.0.113.9"}
        assert failures._recent["203.0.113.9"].count == 2
    finally:
        await stop_server(running)


async def test_tls_after_the_header(valkey_server: Any, tmp_path: Path, prefix: str) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = make_config(
        proxy_protocol=True,
        trusted_proxies="127.0.0.1",
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
    )
    running = await start_server(valkey_server.url, config)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        for version in ("v1", "v2"):
            client = await proxied(running, HEADERS[version](CLIENT), ssl_context=context)
            data = bytes(range(256)) * 1000
            assert (await client.put(prefix + version, data)).ok
            assert (await client.get(prefix + version)).data == data
            await client.close()
    finally:
        await stop_server(running)
