"""TLS to clients (and mutual TLS) with certificates made by the test (trustme)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import trustme

from client import AsyncClient, ValiseError
from client.tls import context
from service.auth import Tokens
from storage.embedded import EmbeddedValkey
from tests.support.harness import (
    Running,
    make_config,
    reap,
    start_process,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.asyncio


@dataclasses.dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("scanner-01.example", common_name="scanner-01")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    other.cert_pem.write_to_path(str(root / "other-ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    client.private_key_and_cert_chain_pem.write_to_path(str(root / "client.pem"))
    return Pki(
        ca=root / "ca.pem",
        cert=root / "server.pem",
        key=root / "server.key",
        client_cert=root / "client.pem",
        other_ca=root / "other-ca.pem",
    )


async def tls_server(
    url: str, pki: Pki, *, mutual: bool = False, tokens: Tokens | None = None
) -> Running:
    config = dataclasses.replace(
        make_config(),
        tls_cert=str(pki.cert),
        tls_key=str(pki.key),
        tls_client_ca=str(pki.ca) if mutual else None,
    )
    return await start_server(url, config, tokens)


@pytest_asyncio.fixture
async def secure(valkey_server: EmbeddedValkey, pki: Pki) -> AsyncIterator[Running]:
    running = await tls_server(valkey_server.url, pki)
    yield running
    await stop_server(running)


async def test_tls_round_trip(secure: Running, pki: Pki, prefix: str) -> None:
    data = bytes(range(256)) * 4096
    ctx = context(ca=str(pki.ca))
    async with AsyncClient(secure.host, secure.port, ssl=ctx, retries=0) as client:
        info = await client.put(prefix + "scan", data)
        assert info["sha1"] == hashlib.sha1(data).hexdigest()
        sink = io.BytesIO()
        await client.get(prefix + "scan", sink)
    assert sink.getvalue() == data


async def test_plain_client_to_tls_server_fails_cleanly(
    secure: Running, pki: Pki, prefix: str
) -> None:
    reader, writer = await asyncio.open_connection(secure.host, secure.port)
    writer.write(b"\x09\x00\x00\x00\x02{}")  # a plaintext PING
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read(100)
    assert not data.startswith(b"\x80"), "no protocol reply over plaintext"
    writer.close()
    # The server is unharmed: a TLS client is served right after.
    async with AsyncClient(
        secure.host, secure.port, ssl=context(ca=str(pki.ca)), retries=0
    ) as client:
        assert await client.ping({"ok": 1}) == {"ok": 1}


async def test_wrong_ca_is_rejected(secure: Running, pki: Pki) -> None:
    with pytest.raises(ValiseError) as raised:
        async with AsyncClient(
            secure.host, secure.port, ssl=context(ca=str(pki.other_ca)), retries=0
        ) as client:
            await client.ping({})
    assert isinstance(raised.value.__cause__, ssl.SSLError) or "certificate" in str(raised.value)


async def test_mutual_tls_requires_a_client_certificate(
    valkey_server: EmbeddedValkey, pki: Pki
) -> None:
    running = await tls_server(valkey_server.url, pki, mutual=True)
    try:
        with pytest.raises(ValiseError):
            async with AsyncClient(
                running.host, running.port, ssl=context(ca=str(pki.ca)), retries=0
            ) as client:
                await client.ping({})
        ctx = context(ca=str(pki.ca), cert=str(pki.client_cert))
        async with AsyncClient(running.host, running.port, ssl=ctx, retries=0) as client:
            assert await client.ping({"mtls": True}) == {"mtls": True}
    finally:
        await stop_server(running)


async def test_certificate_subject_as_token(
    valkey_server: EmbeddedValkey, pki: Pki, tmp_path: Path, prefix: str
) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("subject:CN=scanner-01 radiology rw\nother-secret surgery rw\n")
    tokens = Tokens.load(tokens_file)
    running = await tls_server(valkey_server.url, pki, mutual=True, tokens=tokens)
    try:
        ctx = context(ca=str(pki.ca), cert=str(pki.client_cert))
        async with AsyncClient(running.host, running.port, ssl=ctx, retries=0) as client:
            await client.put(prefix + "k", b"by certificate")
            assert (await client.stat(prefix + "k"))["size"] == len(b"by certificate")
        async with AsyncClient(
            running.host, running.port, ssl=ctx, token="other-secret", retries=0
        ) as client:
            # Same certificate, explicit token: the token's namespace wins.
            with pytest.raises(ValiseError) as raised:
                await client.stat(prefix + "k")
            assert raised.value.code == "not_found"
    finally:
        await stop_server(running)


# -- certificate rotation: SIGHUP reloads --tls-cert/--tls-key ----------------


def issue(ca: trustme.CA, directory: Path, name: str) -> None:
    """A server certificate for 127.0.0.1 whose common name is ``name``, over the old files."""
    cert = ca.issue_cert("127.0.0.1", common_name=name)
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))


async def served_name(host: str, port: int, ca: trustme.CA) -> str:
    """The common name of the certificate a new connection is shown."""
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    _, writer = await asyncio.open_connection(host, port, ssl=trust)
    subject = dict(rdn[0] for rdn in writer.get_extra_info("peercert")["subject"])
    writer.close()
    return str(subject["commonName"])


async def test_reload_swaps_the_certificate_for_new_connections_only(
    valkey_server: EmbeddedValkey, tmp_path: Path, prefix: str
) -> None:
    ca = trustme.CA()
    issue(ca, tmp_path, "first")
    config = dataclasses.replace(
        make_config(), tls_cert=str(tmp_path / "server.pem"), tls_key=str(tmp_path / "server.key")
    )
    running = await start_server(valkey_server.url, config)
    try:
        trust = ssl.create_default_context()
        ca.configure_trust(trust)
        data = bytes(range(256)) * 4096  # 16 chunks of 64 KiB
        async with AsyncClient(running.host, running.port, ssl=trust, retries=0) as client:
            await client.put(prefix + "scan", data)
            assert await served_name(running.host, running.port, ca) == "first"
            # A download in flight while the certificate changes under it.
            sink = io.BytesIO()
            reloaded_at: list[int] = []

            def progress(done: int, total: int | None) -> None:
                if not reloaded_at and done < len(data):
                    issue(ca, tmp_path, "second")
                    running.server.reload()
                    reloaded_at.append(done)

            await client.get(prefix + "scan", sink, progress=progress)
            assert reloaded_at and reloaded_at[0] < len(data)
            assert hashlib.sha1(sink.getvalue()).digest() == hashlib.sha1(data).digest()
            assert await served_name(running.host, running.port, ca) == "second"
            # A broken new file keeps the certificate that works.
            (tmp_path / "server.pem").write_text("not a certificate\n")
            running.server.reload()
            assert await served_name(running.host, running.port, ca) == "second"
            # The connection opened under the first certificate still works.
            assert (await client.stat(prefix + "scan"))["size"] == len(data)
    finally:
        await stop_server(running)


async def test_sighup_reloads_the_certificate_in_every_worker(
    valkey_server: EmbeddedValkey, tmp_path: Path
) -> None:
    ca = trustme.CA()
    issue(ca, tmp_path, "first")
    tls = ["--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key")]
    proc, port = start_process(valkey_server.url, "--workers", "2", *tls)
    try:
        assert {await served_name("127.0.0.1", port, ca) for _ in range(6)} == {"first"}
        issue(ca, tmp_path, "second")
        proc.send_signal(signal.SIGHUP)
        names: set[str] = set()
        for _ in range(50):  # every worker reloads on its own time
            await asyncio.sleep(0.1)
            names = {await served_name("127.0.0.1", port, ca) for _ in range(8)}
            if names == {"second"}:
                break
        assert names == {"second"}
    finally:
        proc.send_signal(signal.SIGTERM)
        reap(proc)
