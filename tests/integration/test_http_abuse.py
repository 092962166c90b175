"""Slow, stalled, stubborn and broken HTTP clients, and storage that fails under a download.

Each gets the binary door's treatment: cut off with a clear status when it
can still be read, reset when it stops reading, and no harm to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import socket
from typing import Any

import pytest

from storage import keys
from tests.support.harness import CHUNK, Running
from tests.support.http import Http, http_address, raw, read_response

pytestmark = pytest.mark.asyncio

BIG = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(6 * CHUNK // 32))


async def everything(reader: asyncio.StreamReader, limit: float = 20) -> bytes:
    """All the server sends until it closes (or resets) the connection."""
    got = bytearray()
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                got += chunk
    return bytes(got)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> dict[str, Any]:
    return dict(json.loads(response.split(b"\r\n\r\n", 1)[1]))


async def still_serving(server: Running, key: str) -> None:
    """Another client's PUT and GET go through."""
    web = Http(http_address(server))
    try:
        assert (await web("PUT", "/v1/files/" + key, b"fine")).status == 201
        assert (await web("GET", "/v1/files/" + key)).body == b"fine"
    finally:
        web.close()


@pytest.mark.config(http_port=0, frame_timeout=1.0, idle_timeout=30.0)
async def test_headers_sent_byte_by_byte_forever_are_cut_off(server: Running, prefix: str) -> None:
    reader, writer = await raw(http_address(server))
    writer.write(b"GET /v1/files/x HTTP/1.1\r\nX-Padding: ")

    async def drip() -> None:
        # Never idle for the idle timeout, never a whole head: only the head deadline ends it.
        with contextlib.suppress(ConnectionError):
            for _ in range(300):
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)

    dripping = asyncio.create_task(drip())
    await still_serving(server, prefix + "other")
    response = await everything(reader)
    assert not dripping.done(), "the client stopped before the server did"
    dripping.cancel()
    writer.close()
    assert status_of(response) == 408
    assert body_of(response)["code"] == "timeout"
    assert b"connection: close" in response.lower()


@pytest.mark.config(http_port=0, idle_timeout=1.0)
async def test_a_client_that_stops_reading_a_download_is_dropped(
    server: Running, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="valise")
    big = bytes(4 * 1024 * 1024)
    web = Http(http_address(server))
    assert (await web("PUT", f"/v1/files/{prefix}big", big)).status == 201
    web.close()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(http_address(server))
    sock.sendall(f"GET /v1/files/{prefix}big HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    try:
        # It never reads a byte. The server gives up after the idle timeout.
        for _ in range(100):
            if not server.server.connections:
                break
            await asyncio.sleep(0.1)
        assert not server.server.connections
        await still_serving(server, prefix + "other")
    finally:
        sock.close()
    outcomes = [
        json.loads(r.getMessage())["outcome"] for r in caplog.records if r.name == "valise.access"
    ]
    assert "timeout" in outcomes


@pytest.mark.config(http_port=0)
async def test_a_corrupt_chunk_cuts_the_download_short(
    server: Running, vk: Any, prefix: str
) -> None:
    web = Http(http_address(server))
    try:
        version = (await web("PUT", f"/v1/files/{prefix}scan", BIG)).json()["version"]
        victim = keys.chunk_key(version, 3)
        vk.setrange(victim, 10, b"X" if BIG[3 * CHUNK + 10] != ord("X") else b"Y")

        def download() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection(*http_address(server), timeout=30)
            conn.request("GET", f"/v1/files/{prefix}scan")
            response = conn.getresponse()
            try:
                response.read()
            except http.client.IncompleteRead as exc:
                return response.status, exc.partial
            finally:
                conn.close()
            raise AssertionError("a download over a corrupt chunk looked whole")

        status, partial = await asyncio.to_thread(download)
        assert status == 200
        # What came is right, and it ends before the damaged chunk.
        assert len(partial) <= 3 * CHUNK
        assert partial == BIG[: len(partial)]

        # A damaged first chunk is found before the status line: a clean 500.
        vk.setrange(keys.chunk_key(version, 0), 0, b"X" if BIG[0] != ord("X") else b"Y")
        answer = await web("GET", f"/v1/files/{prefix}scan")
        assert (answer.status, answer.code) == (500, "corrupt")
        # A range that avoids the damage is still served.
        tail = await web("GET", f"/v1/files/{prefix}scan", headers={"Range": "bytes=-100"})
        assert (tail.status, tail.body) == (206, BIG[-100:])
    finally:
        web.close()


@pytest.mark.config(http_port=0, min_rate=1024, min_rate_window=1.0, idle_timeout=5.0)
async def test_a_dripping_upload_is_cut_off(server: Running, prefix: str) -> None:
    reader, writer = await raw(http_address(server))
    writer.write(
        f"PUT /v1/files/{prefix}drip HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    with contextlib.suppress(ConnectionError):
        for _ in range(8):  # one byte every 0.3 s: under the floor, never idle
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.3)
    response = await everything(reader)
    writer.close()
    assert status_of(response) == 408
    assert "rate" in body_of(response)["message"]
    web = Http(http_address(server))
    assert (await web("GET", f"/v1/files/{prefix}drip")).status == 404
    web.close()


@pytest.mark.config(http_port=0, frame_timeout=0.5, idle_timeout=5.0)
async def test_a_stalled_body_times_out(server: Running, prefix: str) -> None:
    reader, writer = await raw(http_address(server))
    writer.write(
        f"PUT /v1/files/{prefix}stall HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
        + b"0123456789"
    )
    response = await everything(reader)
    writer.close()
    assert status_of(response) == 408
    assert body_of(response)["code"] == "timeout"


def stream_after_rejection(address: tuple[str, int], head: bytes, total: int) -> tuple[int, bytes]:
    """Send a head and ``total`` body bytes whatever the server says, then read its answer."""
    sock = socket.create_connection(address, timeout=20)
    sent = 0
    try:
        sock.sendall(head)
        piece = b"%x\r\n%s\r\n" % (65536, bytes(65536))
        while sent < total:
            sock.sendall(piece)
            sent += 65536
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionError:
        reply = b""
    finally:
        sock.close()
    return sent, reply


@pytest.mark.config(http_port=0, max_file_size=256 * 1024)
async def test_a_client_streaming_after_rejection_reads_the_error(server: Running) -> None:
    address = http_address(server)
    for head, status, code in [
        # Refused from the head alone, the body still on its way.
        (
            b"PUT /v1/files/%FF HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_key",
        ),
        # Refused in the middle of the body: past --max-file-size.
        (
            b"PUT /v1/files/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            413,
            "too_large",
        ),
    ]:
        sent, reply = await asyncio.to_thread(stream_after_rejection, address, head, 2 * 1024**2)
        assert sent >= 2 * 1024**2, "reset before 2 MiB were sent"
        assert status_of(reply) == status
        assert body_of(reply)["code"] == code


@pytest.mark.config(http_port=0)
async def test_an_oversized_or_crowded_head_is_431(server: Running) -> None:
    for head in [
        b"GET /v1/files/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
        b"GET /v1/files/x HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
        + b"\r\n",
    ]:
        reader, writer = await raw(http_address(server))
        writer.write(head)
        response = await everything(reader)
        writer.close()
        assert status_of(response) == 431


@pytest.mark.config(http_port=0)
async def test_a_malformed_request_is_400_then_closed(server: Running) -> None:
    reader, writer = await raw(http_address(server))
    writer.write(b"NONSENSE\r\n\r\n")
    response = await everything(reader)
    writer.close()
    assert status_of(response) == 400
    assert body_of(response) == {"code": "bad_request", "message": "malformed HTTP/1.1 request"}


@pytest.mark.config(http_port=0, max_file_size=1000)
async def test_expect_100_continue(server: Running, prefix: str) -> None:
    reader, writer = await raw(http_address(server))
    writer.write(
        f"PUT /v1/files/{prefix}e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    assert (await read_response(reader))[0] == 201
    # Too large: refused at once, no 100, and the body is never asked for.
    writer.write(
        f"PUT /v1/files/{prefix}e HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    status, fields, _ = await read_response(reader)
    assert (status, fields["connection"]) == (413, "close")
    assert await everything(reader) == b""
    writer.close()


@pytest.mark.config(http_port=0, idle_timeout=0.5)
async def test_an_idle_keep_alive_connection_is_closed_quietly(server: Running) -> None:
    reader, writer = await raw(http_address(server))
    writer.write(b"GET /v1/files/none HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader))[0] == 404
    assert await everything(reader) == b""  # no 408 for a client between requests
    writer.close()
