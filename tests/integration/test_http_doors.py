"""The HTTP door beside the binary one: one store, one set of limits, tokens, logs, TLS.

Real server, real Valkey, real TCP, the standard library's http.client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import http.client
import json
import logging
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

from client.loadtest.spawn import start_address
from service.auth import Tokens
from storage.embedded import EmbeddedValkey
from tests.support import harness
from tests.support.harness import (
    CHUNK,
    ROOT,
    Running,
    make_config,
    reap,
    start_server,
    stop_server,
)
from tests.support.http import Answer, Http, file_path, http_address, raw, read_response, sample
from tests.support.ports import free_port
from tests.support.wire import WireClient

pytestmark = [pytest.mark.asyncio, pytest.mark.config(http_port=0)]

BIG = sample(3 * CHUNK + 5)
path = file_path


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
def web(server: Running) -> Iterator[Http]:
    client = Http(http_address(server))
    yield client
    client.close()


async def put(web: Http, key: str, data: bytes, **headers: str) -> Answer:
    return await web("PUT", path(key), data, {k.replace("_", "-"): v for k, v in headers.items()})


# -- both doors, one store -------------------------------------------------------


async def test_http_upload_binary_download_and_back(
    web: Http, client: WireClient, prefix: str
) -> None:
    up = await put(web, prefix + "h2b", BIG, Content_Type="application/gzip")
    down = await client.get(prefix + "h2b")
    assert down.ok and down.data == BIG
    assert down.end == hashlib.sha1(BIG).digest()
    assert down.body["version"] == up.json()["version"]
    assert down.body["content_type"] == "application/gzip"

    stored = await client.put(prefix + "b2h", BIG[::-1], content_type="image/nifti")
    assert stored.ok
    got = await web("GET", path(prefix + "b2h"))
    assert got.body == BIG[::-1]
    assert got.headers["etag"] == f'"{sha1(BIG[::-1])}:{stored.body["version"]}"'
    assert got.headers["content-type"] == "image/nifti"


async def test_200_requests_on_one_keep_alive_connection(web: Http, prefix: str) -> None:
    await put(web, prefix + "k", b"keep")
    sock = web.conn.sock
    for i in range(200):
        if i % 2:
            answer = await web("GET", path(prefix + "k"))
            assert answer.body == b"keep"
        else:
            answer = await web("HEAD", path(prefix + f"missing{i}"))
            assert answer.status == 404
    assert web.conn.sock is sock  # never reconnected


async def test_pipelined_requests_are_answered_in_order(server: Running, prefix: str) -> None:
    reader, writer = await raw(http_address(server))
    requests = [
        f"PUT {path(prefix + 'p')} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        f"GET {path(prefix + 'p')} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET {path(prefix + 'none')} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"DELETE {path(prefix + 'p')} HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    writer.write("".join(requests).encode())
    answers = [await read_response(reader) for _ in requests]
    writer.close()
    assert [status for status, _, _ in answers] == [201, 200, 404, 204]
    assert answers[1][2] == b"abc"


# -- who may do what -------------------------------------------------------------


@pytest_asyncio.fixture
async def secured(valkey_server: EmbeddedValkey, tmp_path: Path) -> AsyncIterator[Running]:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice-secret radiology rw\nbob-secret planning rw\nro-secret radiology ro\n")
    config = dataclasses.replace(make_config(http_port=0), tokens=str(tokens))
    running = await start_server(valkey_server.url, config, Tokens.load(tokens))
    yield running
    await stop_server(running)


async def test_bearer_tokens_and_namespaces(secured: Running, prefix: str) -> None:
    address = http_address(secured)
    alice, bob, reader = (
        Http(address, "alice-secret"),
        Http(address, "bob-secret"),
        Http(address, "ro-secret"),
    )
    nobody, wrong = Http(address), Http(address, "guess")
    try:
        for client in (nobody, wrong):
            refused = await client("GET", path(prefix + "x"))
            assert (refused.status, refused.code) == (401, "unauthorized")
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert (await alice("PUT", path(prefix + "x"), b"alice's")).status == 201
        assert (await bob("GET", path(prefix + "x"))).status == 404  # another namespace
        assert (await reader("GET", path(prefix + "x"))).body == b"alice's"
        forbidden = await reader("PUT", path(prefix + "x"), b"ro")
        assert (forbidden.status, forbidden.code) == (403, "forbidden")
        assert (await reader("DELETE", path(prefix + "x"))).status == 403
        assert (await alice("GET", path(prefix + "x"))).body == b"alice's"
    finally:
        for client in (alice, bob, reader, nobody, wrong):
            client.close()


@pytest.mark.config(http_port=0, max_connections=1)
async def test_max_connections_is_shared_with_the_binary_door(
    server: Running, client: WireClient, web: Http
) -> None:
    assert (await client.request(0x09, {})).ok  # the one connection allowed, held
    refused = await web("GET", path("anything"))
    assert (refused.status, refused.code) == (503, "busy")
    assert refused.headers["connection"] == "close"
    await client.close()


# -- what is logged and counted ----------------------------------------------------


async def test_access_log_and_metrics_without_key_names(
    web: Http, server: Running, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise")
    key = prefix + "patients/Jane Roe 1961-02-03/t1.nii"
    await put(web, key, b"PATIENT-PIXELS" * 100)
    await web("GET", path(key))
    await web("HEAD", path(key))
    await web("DELETE", path(key))
    await web("GET", path(key))
    entries: list[dict[str, Any]] = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "valise.access"
    ]
    assert [(e["op"], e["outcome"]) for e in entries] == [
        ("put", "ok"),
        ("get", "ok"),
        ("stat", "ok"),
        ("delete", "ok"),
        ("get", "not_found"),
    ]
    assert entries[0]["bytes"] == entries[1]["bytes"] == 1400
    assert len({e["key"] for e in entries}) == 1
    assert "Jane Roe" not in caplog.text
    assert "PATIENT-PIXELS" not in caplog.text
    registry = server.server.metrics.registry
    sample = registry.get_sample_value
    assert sample("valise_requests_total", {"op": "put", "outcome": "ok"}) == 1
    assert sample("valise_requests_total", {"op": "get", "outcome": "not_found"}) == 1
    assert sample("valise_transfers", {"direction": "upload"}) == 0
    assert sample("valise_transfers", {"direction": "download"}) == 0


# -- TLS --------------------------------------------------------------------------


async def test_the_same_tls_flags_wrap_the_http_door(
    valkey_server: EmbeddedValkey, tmp_path: Path, prefix: str
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    config = dataclasses.replace(
        make_config(http_port=0),
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
    )
    running = await start_server(valkey_server.url, config)
    try:
        context = ssl.create_default_context()
        ca.configure_trust(context)

        def round_trip() -> tuple[int, bytes]:
            conn = http.client.HTTPSConnection(*http_address(running), context=context, timeout=30)
            try:
                conn.request("PUT", path(prefix + "tls"), BIG)
                assert conn.getresponse().read()
                conn.request("GET", path(prefix + "tls"))
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        assert await asyncio.to_thread(round_trip) == (200, BIG)
        plain = Http(http_address(running))
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            await plain("GET", path(prefix + "tls"))
        plain.close()
    finally:
        await stop_server(running)


# -- the process ------------------------------------------------------------------


def start(valkey_url: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """The server as a process; its start line (the log goes to a file, never a pipe)."""
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "server.py",
                "--port",
                "0",
                "--valkey-url",
                valkey_url,
                *(["--valkey-cluster"] if harness.CLUSTER else []),
                "--loop",
                harness.LOOP,
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


@pytest.mark.parametrize("workers", [1, 2])
async def test_the_start_line_names_the_http_door(
    valkey_server: EmbeddedValkey, prefix: str, workers: int
) -> None:
    http_port = "0" if workers == 1 else str(free_port())
    proc, line = start(valkey_server.url, "--http-port", http_port, "--workers", str(workers))
    try:
        # The binary door's address stays first: tools parse it.
        assert start_address(line) is not None, line
        words = line.split()
        assert words[4:6] == ["http", "on"], line
        host, port = words[6].rsplit(":", 1)
        web = Http((host, int(port)))
        assert (await web("PUT", path(prefix + "p"), b"by process")).status == 201
        assert (await web("GET", path(prefix + "p"))).body == b"by process"
        web.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert reap(proc, timeout=30) == 0


async def test_shutdown_lets_an_upload_finish_and_closes_idle_connections(
    valkey_server: EmbeddedValkey, prefix: str
) -> None:
    running = await start_server(
        valkey_server.url, dataclasses.replace(make_config(http_port=0), shutdown_grace=10)
    )
    try:
        idle_reader, idle_writer = await raw(http_address(running))
        reader, writer = await raw(http_address(running))
        head = f"PUT {path(prefix + 'late')} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        writer.write(head.encode() + b"01234")
        await asyncio.sleep(0.2)  # the upload is in progress
        stopping = asyncio.create_task(running.server.shutdown())
        assert await idle_reader.read() == b""  # an idle connection is closed at once
        writer.write(b"56789")
        status, fields, _ = await read_response(reader)
        assert (status, fields["connection"]) == (201, "close")
        assert await reader.read() == b""
        await stopping
        for w in (idle_writer, writer):
            w.close()
        assert await running.store.current_vid("", prefix + "late") is not None
    finally:
        await running.store.close()
