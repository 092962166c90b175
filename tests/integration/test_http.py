"""The HTTP door's routes with the standard library's http.client: headers, statuses.

Real server, real Valkey, real TCP; every request goes through http.client
(in a thread: it blocks, and the server runs in the test's event loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import pytest

from tests.support.harness import CHUNK, Running
from tests.support.http import (
    Answer,
    Http,
    file_path,
    http_address,
    raw,
    read_response,
    repr_digest,
    sample,
    scans,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.config(http_port=0)]

#: Bytes that cross several chunks and end inside one: no two chunks alike.
BIG = sample(7 * CHUNK + 124)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


path = file_path


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


async def test_the_status_says_whether_the_put_replaced_a_file(web: Http, prefix: str) -> None:
    # The commit itself says whether it replaced a version: a small file (one
    # trip), after a delete, and racing another PUT of the same key.
    key = prefix + "small"
    assert (await put(web, key, b"one")).status == 201
    assert (await put(web, key, b"two")).status == 200
    assert (await web("DELETE", path(key))).status == 204
    assert (await put(web, key, b"three")).status == 201
    race = prefix + "race"
    webs = [Http((web.conn.host, web.conn.port), web.token) for _ in range(4)]
    try:
        answers = await asyncio.gather(
            *(put(w, race, bytes([n]) * 100) for n, w in enumerate(webs))
        )
    finally:
        for w in webs:
            w.close()
    assert sorted(a.status for a in answers) == [200, 200, 200, 201]


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
    stored = await web("POST", "/upload/" + name, BIG, {"Content-Type": "text/plain"})
    assert (stored.status, stored.json()) == (200, {"ok": True})
    got = await web("GET", "/download/" + name)
    assert got.status == 200
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.body == BIG
    native = await web("GET", path(name))  # the same key as /v1/files/
    assert (native.body, native.headers["content-type"]) == (BIG, "application/octet-stream")
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
