"""The HTTP door with the standard library's http.client: routes, headers, statuses.

Real server, real Valkey, real TCP; every request goes through http.client
(in a thread: it blocks, and the server runs in the test's event loop).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import http.client
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import trustme

from service.auth import Tokens
from storage.embedded import EmbeddedValkey
from tests.support.harness import CHUNK, Running, make_config, start_server, stop_server
from tests.support.http import Answer, Http, http_address, raw, read_response, scans
from tests.support.wire import WireClient

pytestmark = [pytest.mark.asyncio, pytest.mark.config(http_port=0)]

#: Bytes that cross several chunks and end inside one: no two chunks alike.
BIG = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(7 * CHUNK // 32))
BIG += b"tail" * 31


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def repr_digest(data: bytes) -> str:
    return f"sha=:{base64.b64encode(hashlib.sha1(data).digest()).decode()}:"


def path(key: str) -> str:
    return "/v1/files/" + urllib.parse.quote(key, safe="/")


@pytest.fixture
def web(server: Running) -> Iterator[Http]:
    client = Http(http_address(server))
    yield client
    client.close()


async def put(web: Http, key: str, data: bytes, **headers: str) -> Answer:
    return await web("PUT", path(key), data, {k.replace("_", "-"): v for k, v in headers.items()})


# -- round trips --------------------------------------------------------------


async def test_real_scans_round_trip_bit_for_bit(web: Http, prefix: str) -> None:
    for scan in scans():
        data = scan.read_bytes()
        key = f"{prefix}patients/1234/{scan.name}"
        stored = await put(web, key, data, Content_Type="application/gzip")
        assert stored.status == 201, stored.body
        info = stored.json()
        assert (info["key"], info["size"], info["sha1"]) == (key, len(data), sha1(data))
        assert info["content_type"] == "application/gzip"
        assert stored.headers["etag"] == f'"{sha1(data)}:{info["version"]}"'
        assert stored.headers["repr-digest"] == repr_digest(data)

        got = await web("GET", path(key))
        assert got.status == 200
        assert got.body == data
        assert got.headers["content-type"] == "application/gzip"
        assert got.headers["content-length"] == str(len(data))
        assert got.headers["etag"] == stored.headers["etag"]
        assert got.headers["repr-digest"] == repr_digest(data)
        assert got.headers["accept-ranges"] == "bytes"
        assert got.headers["last-modified"].endswith(" GMT")
        assert got.headers["expires"].endswith(" GMT")

        head = await web("HEAD", path(key))
        assert (head.status, head.body) == (200, b"")
        del head.headers["date"], got.headers["date"]
        assert head.headers == got.headers


async def test_a_file_of_several_chunks_and_its_overwrite(web: Http, prefix: str) -> None:
    first = await put(web, prefix + "big", BIG)
    assert first.status == 201
    assert first.json()["chunks"] == len(BIG) // CHUNK + 1
    assert first.json()["sha1"] == sha1(BIG)  # no digest sent: the server's own
    again = await put(web, prefix + "big", BIG[::-1], Content_Type="application/octet-stream")
    assert again.status == 200  # an overwrite
    assert again.json()["version"] != first.json()["version"]
    got = await web("GET", path(prefix + "big"))
    assert got.body == BIG[::-1]
    assert got.headers["etag"] == again.headers["etag"]


async def test_an_empty_file(web: Http, prefix: str) -> None:
    assert (await put(web, prefix + "empty", b"")).status == 201
    got = await web("GET", path(prefix + "empty"))
    assert (got.status, got.body, got.headers["content-length"]) == (200, b"", "0")
    assert got.headers["repr-digest"] == repr_digest(b"")


async def test_keys_are_percent_decoded_utf8(web: Http, prefix: str) -> None:
    key = prefix + "patients/Zoë Ångström/t1?#.nii"
    quoted = f"/v1/files/{prefix}patients/Zo%C3%AB%20%C3%85ngstr%C3%B6m%2Ft1%3F%23.nii"
    assert (await web("PUT", quoted, b"scan")).json()["key"] == key
    listed = await web("GET", f"/v1/files?prefix={prefix}patients/")
    assert [f["key"] for f in listed.json()["files"]] == [key]


async def test_ttl_header(web: Http, server: Running, prefix: str) -> None:
    info = (await put(web, prefix + "ttl", b"x", X_Valise_TTL="100")).json()
    assert info["expires_at"] - info["created_at"] == pytest.approx(100)
    for bad in (str(server.config.max_ttl + 1), "0", "soon"):
        refused = await put(web, prefix + "ttl", b"y", X_Valise_TTL=bad)
        assert (refused.status, refused.code) == (400, "bad_request")
    assert (await web("GET", path(prefix + "ttl"))).body == b"x"


# -- digests ------------------------------------------------------------------


async def test_repr_digest_right_and_wrong(web: Http, prefix: str) -> None:
    key = prefix + "checked"
    assert (await put(web, key, BIG, Repr_Digest=repr_digest(BIG))).status == 201
    before = (await web("HEAD", path(key))).headers["etag"]

    wrong = await put(web, key, BIG[:-1] + b"!", Repr_Digest=repr_digest(BIG))
    assert (wrong.status, wrong.code) == (409, "checksum_mismatch")
    assert wrong.json()["expected"] == sha1(BIG)
    assert wrong.json()["actual"] == sha1(BIG[:-1] + b"!")
    # Nothing stored: the previous version is intact, bit for bit.
    got = await web("GET", path(key))
    assert (got.body == BIG, got.headers["etag"]) == (True, before)

    hexed = await put(web, key, b"new", X_Checksum_SHA1=sha1(b"new").upper())
    assert hexed.status == 200
    both = await put(web, key, b"x", X_Checksum_SHA1=sha1(b"x"), Repr_Digest=repr_digest(b"y"))
    assert (both.status, both.code) == (400, "bad_request")
    wrong_hex = await put(web, key, b"x", X_Checksum_SHA1=sha1(b"y"))
    assert wrong_hex.status == 409
    assert (await web("GET", path(key))).body == b"new"


def chunked(data: bytes, piece: int = 10_000) -> bytes:
    return b"".join(
        b"%x\r\n%s\r\n" % (len(data[i : i + piece]), data[i : i + piece])
        for i in range(0, len(data), piece)
    )


async def chunked_put(
    server: Running, key: str, data: bytes, trailer: str | None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await raw(http_address(server))
    head = f"PUT {path(key)} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    if trailer is not None:
        head += "Trailer: Repr-Digest\r\n"
    writer.write(head.encode() + b"\r\n" + chunked(data) + b"0\r\n")
    if trailer is not None:
        writer.write(f"Repr-Digest: {trailer}\r\n".encode())
    writer.write(b"\r\n")
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def test_chunked_upload_with_the_digest_in_a_trailer(server: Running, prefix: str) -> None:
    key = prefix + "trailer"
    status, fields, body = await chunked_put(server, key, BIG, repr_digest(BIG))
    assert status == 201, body
    assert json.loads(body)["size"] == len(BIG)
    assert fields["repr-digest"] == repr_digest(BIG)

    status, _, body = await chunked_put(server, key, b"other bytes", repr_digest(b"nope"))
    assert status == 409
    assert json.loads(body)["code"] == "checksum_mismatch"
    status, _, body = await chunked_put(server, prefix + "untrailed", b"abc" * 9999, None)
    assert (status, json.loads(body)["sha1"]) == (201, sha1(b"abc" * 9999))

    web = Http(http_address(server))
    try:
        assert (await web("GET", path(key))).body == BIG
    finally:
        web.close()


# -- ranges and conditions ------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "start", "stop"),
    [
        ("bytes=0-0", 0, 1),  # the first byte
        (f"bytes={len(BIG) - 1}-{len(BIG) - 1}", len(BIG) - 1, len(BIG)),  # the last
        ("bytes=-1", len(BIG) - 1, len(BIG)),
        (f"bytes=-{CHUNK + 5}", len(BIG) - CHUNK - 5, len(BIG)),  # a suffix across chunks
        (f"bytes={CHUNK - 3}-{2 * CHUNK + 2}", CHUNK - 3, 2 * CHUNK + 3),
        (f"bytes={len(BIG) - 10}-{len(BIG) + 500}", len(BIG) - 10, len(BIG)),  # cut at the end
        (f"bytes={CHUNK}-", CHUNK, len(BIG)),
    ],
)
async def test_single_ranges(web: Http, prefix: str, asked: str, start: int, stop: int) -> None:
    await put(web, prefix + "r", BIG)
    got = await web("GET", path(prefix + "r"), headers={"Range": asked})
    assert got.status == 206
    assert got.body == BIG[start:stop]
    assert got.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(BIG)}"
    assert got.headers["repr-digest"] == repr_digest(BIG)  # of the whole file
    head = await web("HEAD", path(prefix + "r"), headers={"Range": asked})
    assert (head.status, head.headers["content-length"]) == (206, str(stop - start))


async def test_unsatisfiable_and_multiple_ranges(web: Http, prefix: str) -> None:
    await put(web, prefix + "r", BIG)
    past = await web("GET", path(prefix + "r"), headers={"Range": f"bytes={len(BIG)}-"})
    assert (past.status, past.code) == (416, "bad_range")
    assert past.headers["content-range"] == f"bytes */{len(BIG)}"
    several = await web("GET", path(prefix + "r"), headers={"Range": "bytes=0-1,5-6"})
    assert (several.status, several.body) == (200, BIG)
    await put(web, prefix + "empty", b"")
    empty = await web("GET", path(prefix + "empty"), headers={"Range": "bytes=0-"})
    assert (empty.status, empty.headers["content-range"]) == (416, "bytes */0")


async def test_if_range_never_splices_two_versions(web: Http, prefix: str) -> None:
    key = prefix + "resumed"
    old = (await put(web, key, BIG)).headers["etag"]
    part = await web("GET", path(key), headers={"Range": "bytes=10-", "If-Range": old})
    assert (part.status, part.body) == (206, BIG[10:])
    await put(web, key, BIG[::-1])
    # The version changed: the whole new file, never its tail after the old head.
    stale = await web("GET", path(key), headers={"Range": "bytes=10-", "If-Range": old})
    assert (stale.status, stale.body) == (200, BIG[::-1])
    dated = await web(
        "GET", path(key), headers={"Range": "bytes=10-", "If-Range": stale.headers["last-modified"]}
    )
    assert dated.status == 200


async def test_conditional_get(web: Http, prefix: str) -> None:
    key = prefix + "cond"
    tag = (await put(web, key, b"v1")).headers["etag"]
    same = await web("GET", path(key), headers={"If-None-Match": tag})
    assert (same.status, same.body, same.headers["etag"]) == (304, b"", tag)
    assert (await web("GET", path(key), headers={"If-None-Match": '"other"'})).status == 200
    assert (await web("GET", path(key), headers={"If-Match": tag})).body == b"v1"
    await put(web, key, b"v2")
    moved = await web("GET", path(key), headers={"If-Match": tag})
    assert moved.status == 412
    assert (await web("HEAD", path(key), headers={"If-None-Match": tag})).status == 200


async def test_if_none_match_star_stores_only_a_new_key(web: Http, prefix: str) -> None:
    key = prefix + "once"
    assert (await put(web, key, b"first", If_None_Match="*")).status == 201
    second = await put(web, key, b"second", If_None_Match="*")
    assert (second.status, second.code) == (412, "exists")
    assert (await web("GET", path(key))).body == b"first"
    conditional = await put(web, key, b"third", If_Match='"x"')
    assert conditional.status == 400  # refused, never silently unconditional
    assert (await web("GET", path(key))).body == b"first"


# -- the other routes -----------------------------------------------------------


async def test_delete(web: Http, prefix: str) -> None:
    await put(web, prefix + "gone", b"x")
    deleted = await web("DELETE", path(prefix + "gone"))
    assert (deleted.status, deleted.body) == (204, b"")
    again = await web("DELETE", path(prefix + "gone"))
    assert (again.status, again.code) == (404, "not_found")
    assert (await web("GET", path(prefix + "gone"))).status == 404


async def test_list_pages_with_a_cursor(web: Http, prefix: str) -> None:
    for name in ("a", "b", "c"):
        await put(web, f"{prefix}dir/{name}", name.encode())
    await put(web, prefix + "dir2", b"not in dir/")
    first = (await web("GET", f"/v1/files?prefix={prefix}dir/&limit=2")).json()
    assert [f["key"] for f in first["files"]] == [f"{prefix}dir/a", f"{prefix}dir/b"]
    assert first["cursor"] is not None
    rest = await web("GET", f"/v1/files?prefix={prefix}dir/&limit=2&cursor={first['cursor']}")
    assert [f["key"] for f in rest.json()["files"]] == [f"{prefix}dir/c"]
    assert rest.json()["cursor"] is None
    for bad in ("0", "-1", "x"):
        refused = await web("GET", f"/v1/files?limit={bad}")
        assert (refused.status, refused.code) == (400, "bad_request")


async def test_descendant_api(web: Http, prefix: str) -> None:
    name = prefix + "scan.nii"
    stored = await web("POST", "/upload/" + name, BIG)
    assert (stored.status, stored.json()) == (200, {"ok": True})
    got = await web("GET", "/download/" + name)
    assert got.status == 200
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.body == BIG
    assert (await web("GET", path(name))).body == BIG  # the same key as /v1/files/
    empty = await web("POST", "/upload/" + prefix + "empty")
    assert (empty.status, empty.code) == (422, "bad_request")
    assert (await web("GET", "/download/" + prefix + "empty")).status == 404
    missing = await web("GET", "/download/" + prefix + "missing")
    assert (missing.status, missing.code) == (404, "not_found")


async def test_bad_requests(web: Http, prefix: str) -> None:
    cases: list[tuple[str, str, int, str]] = [
        ("GET", "/v1/files/%FF", 400, "bad_key"),
        ("GET", "/v1/files/" + "k" * 1100, 400, "bad_key"),
        ("GET", "/elsewhere", 404, "not_found"),
        ("POST", path(prefix + "x"), 405, "bad_request"),
    ]
    for method, target, status, code in cases:
        answer = await web(method, target, b"" if method == "POST" else None)
        assert (answer.status, answer.code) == (status, code), target
        assert answer.headers["content-type"] == "application/json"
    assert "PUT" in (await web("POST", path(prefix + "x"), b"")).headers["allow"]


@pytest.mark.config(http_port=0, max_file_size=100_000)
async def test_too_large(web: Http, prefix: str) -> None:
    declared = await put(web, prefix + "big", bytes(100_001))
    assert (declared.status, declared.code) == (413, "too_large")
    streamed = await web("PUT", path(prefix + "big"), iter([bytes(60_000), bytes(60_000)]))
    assert (streamed.status, streamed.code) == (413, "too_large")
    assert (await put(web, prefix + "fits", bytes(100_000))).status == 201
    assert (await web("GET", path(prefix + "big"))).status == 404


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
