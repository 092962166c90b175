"""Encryption at rest (--encryption-key-file): what Valkey holds, tampering, rotation,
mixed stores, refusals at start. Real servers, real Valkey (one node or the cluster)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from protocol.frames import FrameType
from storage import keys
from storage.embedded import EmbeddedValkey
from tests.integration.conftest import fresh_valkey
from tests.support.cluster import LocalCluster
from tests.support.faultproxy import FaultProxy
from tests.support.harness import (
    CHUNK,
    ROOT,
    Running,
    make_config,
    reap,
    start_process,
    start_server,
    stop_server,
)
from tests.support.http import Http, file_path, http_address, scans
from tests.support.resume import (
    boundaries,
    file_bytes_within,
    finish,
    resume,
    send_quietly,
    upload_stream,
)
from tests.support.resume import until as resume_until
from tests.support.wire import Reply, WireClient

#: Random bytes over several chunks, ending inside one: no two chunks alike.
SIZE = 5 * CHUNK + 1234


def key_line(key_id: str, seed: int) -> str:
    return f"{key_id} {base64.b64encode(bytes((seed + i) % 256 for i in range(32))).decode()}"


K1, K2 = key_line("k1", 1), key_line("k2", 2)


def write_keys(path: Path, *lines: str, mode: int = 0o600) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(mode)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_keys(tmp_path / "keys", K1)


@pytest.fixture(scope="module")
def valkey_server() -> Iterator[EmbeddedValkey | LocalCluster]:
    """This module's own Valkey: "every key it holds" is then only what these
    tests wrote, and a scan of it does not grow with the rest of the suite."""
    yield from fresh_valkey()


@pytest_asyncio.fixture
async def sealed(valkey_server: EmbeddedValkey, key_file: Path) -> AsyncIterator[Running]:
    """A server that seals what it stores (HTTP door on too)."""
    config = make_config(encryption_key_file=str(key_file), http_port=0)
    running = await start_server(valkey_server.url, config)
    yield running
    await stop_server(running)


@pytest_asyncio.fixture
async def wire(sealed: Running) -> AsyncIterator[WireClient]:
    client = await sealed.client()
    yield client
    await client.close()


async def stored(client: WireClient, key: str, data: bytes) -> str:
    """Upload ``data``; its version id."""
    reply = await client.put(key, data)
    assert reply.ok, reply.body
    return str(reply.body["version"])


def everything(vk: Any) -> Iterator[tuple[bytes, list[bytes]]]:
    """Every key Valkey holds and what it holds: GET, HGETALL, ZRANGE or XRANGE, and DUMP."""
    for name in vk.scan_iter(count=1000):
        kind = vk.type(name)
        held: list[bytes] = [vk.dump(name) or b""]
        if kind == b"string":
            held.append(vk.get(name) or b"")
        elif kind == b"hash":
            held += [b"%s=%s" % item for item in vk.hgetall(name).items()]
        elif kind == b"zset":
            held += [member for member, _ in vk.zrange(name, 0, -1, withscores=True)]
        elif kind == b"stream":
            for _, fields in vk.xrange(name):
                held += [b"%s=%s" % item for item in fields.items()]
        yield name, held


class Windows:
    """Finds any 16-byte window of a file in other bytes, whatever its offset.

    A 16-byte match at any offset holds an 8-byte-aligned 8-byte window of the
    other bytes: those are looked up among every 8-byte window of the file
    (a set of ints, C-speed), and only a hit is checked in full.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.eights = {int.from_bytes(data[i : i + 8], "little") for i in range(len(data) - 7)}

    def found_in(self, held: bytes) -> bool:
        usable = len(held) // 8 * 8
        for n, (word,) in enumerate(struct.iter_unpack("<Q", held[:usable])):
            if word in self.eights:
                at = n * 8
                if any(held[k : k + 16] in self.data for k in range(max(at - 8, 0), at + 1)):
                    return True
        return False


@pytest.mark.asyncio
async def test_valkey_holds_no_readable_byte_nor_checksum(
    wire: WireClient, vk: Any, prefix: str
) -> None:
    data = os.urandom(SIZE)
    small = os.urandom(3000)  # the one-round-trip path on one node
    vids = [await stored(wire, prefix + "scan", data), await stored(wire, prefix + "small", small)]
    for key, body in ((prefix + "scan", data), (prefix + "small", small)):
        got = await wire.get(key)
        assert (got.ok, got.data) == (True, body)
        stat = await wire.request(FrameType.STAT, {"key": key})
        assert stat.body["sha1"] == hashlib.sha1(body).hexdigest()
    secrets = [
        hashlib.sha1(body[i : i + CHUNK]).digest()
        for body in (data, small)
        for i in range(0, len(body), CHUNK)
    ]
    secrets += [hashlib.sha1(body).digest() for body in (data, small)]
    secrets += [hashlib.sha1(body).hexdigest().encode() for body in (data, small)]
    windows = [Windows(data), Windows(small)]
    ours = []
    for name, held in everything(vk):
        for value in held:
            assert not any(w.found_in(value) for w in windows), name
            assert not any(secret in value for secret in secrets), name
        if prefix.encode() in name or any(vid.encode() in name for vid in vids):
            ours.append(name)
    # The keys of both files: meta, every chunk, both digest lists; each with a TTL.
    assert len(ours) == 2 + (SIZE // CHUNK + 1) + 1 + 2
    assert all(vk.pttl(name) > 0 for name in ours)


@pytest.mark.asyncio
async def test_real_scans_round_trip_through_the_http_door(sealed: Running, prefix: str) -> None:
    web = Http(http_address(sealed))
    try:
        for scan in scans():
            data = scan.read_bytes()
            path = file_path(f"{prefix}{scan.name}")
            put = await web("PUT", path, data, {"Content-Type": "application/gzip"})
            assert put.status == 201, put.body
            got = await web("GET", path)
            assert (got.status, got.body) == (200, data)
            assert got.headers["content-type"] == "application/gzip"
            part = await web("GET", path, headers={"Range": f"bytes=10-{len(data) // 2}"})
            assert (part.status, part.body) == (206, data[10 : len(data) // 2 + 1])
    finally:
        web.close()


@pytest.mark.asyncio
async def test_ranges_and_a_file_of_many_chunks(wire: WireClient, prefix: str) -> None:
    data = os.urandom(40 * CHUNK + 77)
    await stored(wire, prefix + "many", data)
    assert (await wire.get(prefix + "many")).data == data
    for offset, length in ((0, 1), (CHUNK - 3, 7), (17 * CHUNK + 5, 3 * CHUNK), (len(data) - 2, 9)):
        got = await wire.get(prefix + "many", offset=offset, length=length)
        assert got.data == data[offset : offset + length]
        assert got.end == hashlib.sha1(data[offset : offset + length]).digest()


def damaged(reply: Reply, data: bytes) -> bool:
    """``corrupt`` in place of END, and every byte sent before it right."""
    return reply.code == "corrupt" and data.startswith(reply.data)


def flip_bit(value: bytes) -> bytes:
    changed = bytearray(value)
    changed[len(value) // 2] ^= 0x10
    return bytes(changed)


def new_nonce(value: bytes) -> bytes:
    start = 2 + value[1]
    return value[:start] + os.urandom(12) + value[start + 12 :]


@pytest.mark.asyncio
async def test_a_stored_value_moved_or_altered_is_corrupt_never_wrong_bytes(
    wire: WireClient, vk: Any, prefix: str
) -> None:
    data, other = os.urandom(SIZE), os.urandom(SIZE)
    vid = await stored(wire, prefix + "scan", data)
    other_vid = await stored(wire, prefix + "other", other)
    one, two = keys.chunk_key(vid, 1), keys.chunk_key(vid, 2)
    originals = {name: vk.get(name) for name in (one, two)}
    cases: list[tuple[str, dict[str, bytes]]] = [
        ("swapped with another chunk of the file", {one: originals[two], two: originals[one]}),
        ("a chunk of another file", {one: vk.get(keys.chunk_key(other_vid, 1))}),
        ("a flipped bit", {one: flip_bit(originals[one])}),
        ("a truncated value", {one: originals[one][:-1]}),
        ("a replaced nonce", {one: new_nonce(originals[one])}),
        (
            "another file's digest list",
            {keys.digests_key(vid): vk.get(keys.digests_key(other_vid))},
        ),
    ]
    saved = {keys.digests_key(vid): vk.get(keys.digests_key(vid)), **originals}
    for what, changes in cases:
        for name, value in changes.items():
            vk.set(name, value, keepttl=True)
        got = await wire.get(prefix + "scan")
        assert damaged(got, data), what
        assert (await wire.get(prefix + "scan", offset=CHUNK + 5, length=10)).code == "corrupt"
        for name in changes:
            vk.set(name, saved[name], keepttl=True)
        assert (await wire.get(prefix + "scan")).data == data, what


@pytest.mark.asyncio
async def test_a_file_info_moved_to_another_key_is_corrupt(
    wire: WireClient, vk: Any, prefix: str
) -> None:
    await stored(wire, prefix + "a", b"scan a" * 1000)
    await stored(wire, prefix + "b", b"scan b" * 1000)
    ns = keys.NamespaceKeys("")
    # Key b now names a's version, with a's sealed SHA-1 and content type.
    vk.hset(ns.meta(prefix + "b"), mapping=vk.hgetall(ns.meta(prefix + "a")))
    for reply in (
        await wire.request(FrameType.STAT, {"key": prefix + "b"}),
        await wire.get(prefix + "b"),
    ):
        assert reply.code == "corrupt"
        assert reply.data == b""
    assert (await wire.get(prefix + "a")).data == b"scan a" * 1000


@pytest.mark.asyncio
async def test_rotation_with_sighup(
    valkey_server: EmbeddedValkey, vk: Any, key_file: Path, prefix: str
) -> None:
    proc, port = start_process(valkey_server.url, "--encryption-key-file", str(key_file))
    try:
        client = await WireClient.connect("127.0.0.1", port)
        old = os.urandom(3 * CHUNK)
        old_vid = await stored(client, prefix + "old", old)
        assert key_id_of(vk, old_vid) == "k1"

        write_keys(key_file, K2, K1)  # k2 first: it seals from now on
        proc.send_signal(signal.SIGHUP)
        new = os.urandom(3 * CHUNK)
        await until(
            lambda: stored(client, prefix + "new", new), lambda vid: key_id_of(vk, vid) == "k2"
        )
        assert (await client.get(prefix + "old")).data == old
        assert (await client.get(prefix + "new")).data == new

        write_keys(key_file, K2)  # k1 retired
        proc.send_signal(signal.SIGHUP)
        gone = await until(
            lambda: client.get(prefix + "old"), lambda reply: reply.code == "unavailable"
        )
        assert gone.body["message"] == "the file is encrypted with key 'k1', which is not loaded"
        assert (await client.get(prefix + "new")).data == new
        stat = await client.request(FrameType.STAT, {"key": prefix + "old"})
        assert stat.code == "unavailable"
        assert "'k1'" in stat.body["message"]
        # Still deletable: freeing a version needs no key.
        assert (await client.request(FrameType.DELETE, {"key": prefix + "old"})).ok

        write_keys(key_file, "k3 not-a-key")  # a bad file keeps the keys loaded
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert proc.poll() is None
        assert (await client.get(prefix + "new")).data == new
        assert key_id_of(vk, await stored(client, prefix + "newer", b"x" * 100)) == "k2"
        await client.close()
    finally:
        proc.terminate()
        reap(proc)


def key_id_of(vk: Any, vid: str) -> str:
    """The key id a version's chunk 0 is sealed under (its value's header)."""
    value = vk.get(keys.chunk_key(vid, 0))
    return str(value[2 : 2 + value[1]].decode())


async def until(act: Any, done: Any, tries: int = 50) -> Any:
    """``act()`` until ``done(result)``; the signal reaches the server when it does."""
    for _ in range(tries):
        result = await act()
        if done(result):
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("the server never reloaded its keys")


@pytest.mark.asyncio
async def test_mixed_stores_on_and_off(
    valkey_server: EmbeddedValkey, key_file: Path, prefix: str
) -> None:
    plain_server = await start_server(valkey_server.url, make_config())
    plain = await plain_server.client()
    await stored(plain, prefix + "before", b"stored in clear" * 5000)

    sealed_server = await start_server(
        valkey_server.url, make_config(encryption_key_file=str(key_file))
    )
    sealed = await sealed_server.client()
    # Turned on: the plaintext file stays readable until it expires.
    assert (await sealed.get(prefix + "before")).data == b"stored in clear" * 5000
    await stored(sealed, prefix + "after", b"sealed" * 20000)
    listed = await sealed.request(FrameType.LIST, {"prefix": prefix})
    assert [f["key"] for f in listed.body["files"]] == [prefix + "after", prefix + "before"]
    await sealed.close()
    await stop_server(sealed_server)

    # Turned off: encrypted files are refused with a clear error, never ciphertext.
    assert (await plain.get(prefix + "before")).data == b"stored in clear" * 5000
    for reply in (
        await plain.get(prefix + "after"),
        await plain.request(FrameType.STAT, {"key": prefix + "after"}),
    ):
        assert reply.code == "unavailable"
        assert reply.data == b""
        assert reply.body["message"] == (
            "the file is encrypted (key 'k1') and this server runs without --encryption-key-file"
        )
    await plain.close()
    await stop_server(plain_server)


@pytest.mark.asyncio
async def test_workers_seal_and_open(
    valkey_server: EmbeddedValkey, vk: Any, key_file: Path, prefix: str
) -> None:
    proc, port = start_process(
        valkey_server.url, "--encryption-key-file", str(key_file), "--workers", "2"
    )
    try:
        data = os.urandom(2 * CHUNK + 9)
        for n in range(4):  # new connections: both workers take some
            client = await WireClient.connect("127.0.0.1", port)
            vid = await stored(client, f"{prefix}{n}", data)
            assert key_id_of(vk, vid) == "k1"
            assert (await client.get(f"{prefix}0")).data == data
            await client.close()
    finally:
        proc.terminate()
        reap(proc)


@pytest.mark.parametrize(
    ("lines", "mode", "why"),
    [
        ([K1], 0o644, "group or others may read or change it (mode 0644); chmod 600 it"),
        (["k1 bm90IGJhc2U2NA=!"], 0o600, ":1: key 'k1' is not valid base64"),
        ([f"k1 {base64.b64encode(bytes(31)).decode()}"], 0o600, ":1: key 'k1' is 31 bytes"),
        ([], 0o600, ": no keys"),
    ],
)
def test_start_is_refused(
    valkey_server: EmbeddedValkey, tmp_path: Path, lines: list[str], mode: int, why: str
) -> None:
    path = write_keys(tmp_path / "keys", *lines, mode=mode)
    result = subprocess.run(
        [
            sys.executable,
            "server.py",
            "--port",
            "0",
            "--valkey-url",
            valkey_server.url,
            "--encryption-key-file",
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"valise: refusing to start: {path}")
    assert why in result.stderr
    for line in lines:
        assert line.split()[-1] not in result.stderr


# -- resumable uploads and change events (docs/protocol.md sections 6.1, 6.3) --

#: A content type no other test uses: found anywhere in Valkey, it was stored in clear.
SECRET_TYPE = "application/x-valise-sealed-type"


async def let_go(server: Running, still_open: int = 0) -> None:
    """The server has seen the broken connection end (and stored what it read)."""
    await resume_until(lambda: len(server.server.connections) <= still_open)


def no_trace(vk: Any, data: bytes, secrets: list[bytes]) -> list[bytes]:
    """Every key Valkey holds, checked: no 16-byte window of ``data``, none of ``secrets``."""
    windows = Windows(data)
    names = []
    for name, held in everything(vk):
        for value in held:
            assert not windows.found_in(value), name
            assert not any(secret in value for secret in secrets), name
        names.append(name)
    return names


@pytest.mark.asyncio
async def test_a_resumable_upload_cut_midway_is_sealed_and_resumes(
    sealed: Running, vk: Any, prefix: str
) -> None:
    data = os.urandom(4 * CHUNK + 777)
    cut_at = 2 * CHUNK + 1234  # two whole chunks stored, a partial one kept for RESUME
    proxy = FaultProxy((sealed.host, sealed.port))
    await proxy.start()
    try:
        stream = upload_stream(prefix + "scan", data, content_type=SECRET_TYPE)
        put_end = boundaries(stream)[1]
        # The link breaks right after file byte cut_at, inside a DATA frame.
        proxy.arm(next(n for n in range(len(stream)) if file_bytes_within(stream, n) == cut_at))
        client = await WireClient.connect(*proxy.address)
        await client.send(stream[:put_end])
        first = await client.reply()
        assert first.ok, first.body
        await send_quietly(client, stream[put_end:])
        await proxy.struck()
        await client.close()
        await let_go(sealed)
    finally:
        await proxy.close()

    # At the cut: chunks, the partial chunk, the digest list, the upload's state.
    pieces = [data[i : i + CHUNK] for i in range(0, cut_at, CHUNK)]
    secrets = [hashlib.sha1(piece).digest() for piece in pieces]
    secrets.append(SECRET_TYPE.encode())
    upload_id = first.body["upload_id"]
    vid = json.loads(vk.hget(keys.NamespaceKeys("").upload(upload_id), "meta"))["vid"]
    names = no_trace(vk, data[:cut_at], secrets)
    ours = [name for name in names if vid.encode() in name or upload_id.encode() in name]
    # Chunks 0 and 1, the partial chunk; the upload's state and its digest list.
    assert len(ours) == 5, ours
    assert all(vk.pttl(name) != -1 for name in names)  # every key has a TTL

    wire = await sealed.client()
    resumed = await resume(wire, upload_id)
    assert (resumed.ok, resumed.body.get("offset")) == (True, cut_at), resumed.body
    done = await finish(wire, data, cut_at)
    assert done.ok, done.body
    stat = await wire.request(FrameType.STAT, {"key": prefix + "scan"})
    assert (stat.body["sha1"], stat.body["content_type"]) == (
        hashlib.sha1(data).hexdigest(),
        SECRET_TYPE,
    )
    got = await wire.get(prefix + "scan")
    assert (got.data, got.end) == (data, hashlib.sha1(data).digest())
    web = Http(http_address(sealed))
    try:
        over_http = await web("GET", file_path(prefix + "scan"))
        assert (over_http.status, over_http.body) == (200, data)
        assert over_http.headers["content-type"] == SECRET_TYPE
    finally:
        web.close()

    # Committed: nothing in clear, the event stream included; subscribers see it opened.
    secrets += [hashlib.sha1(data[i : i + CHUNK]).digest() for i in range(0, len(data), CHUNK)]
    secrets += [hashlib.sha1(data).digest(), hashlib.sha1(data).hexdigest().encode()]
    no_trace(vk, data, secrets)
    replay = await wire.request(FrameType.SUBSCRIBE, {"prefix": prefix, "since": "0-0"})
    assert replay.ok, replay.body
    event = await wire.frame()
    assert event is not None and event.type is FrameType.EVENT
    told = json.loads(event.payload)
    assert told == {"id": told["id"], "event": "stored", **stat.body}
    await wire.close()


async def hung_up(server: Running, key: str, data: bytes) -> str:
    """A sealed resumable upload of ``data``, left by its client: its upload id."""
    still_open = len(server.server.connections)
    client = await server.client()
    await client.send(upload_stream(key, data, content_type=SECRET_TYPE))
    first = await client.reply()
    assert first.ok, first.body
    await client.close()
    await let_go(server, still_open)
    return str(first.body["upload_id"])


@pytest.mark.asyncio
async def test_a_tampered_staged_value_is_never_built_upon(
    sealed: Running, vk: Any, prefix: str
) -> None:
    data = os.urandom(3 * CHUNK + 500)
    ns = keys.NamespaceKeys("")

    def tamper_chunk(vid: str, upload_id: str) -> None:
        vk.set(keys.chunk_key(vid, 1), flip_bit(vk.get(keys.chunk_key(vid, 1))), keepttl=True)

    def swap_chunks(vid: str, upload_id: str) -> None:
        zero, one = vk.get(keys.chunk_key(vid, 0)), vk.get(keys.chunk_key(vid, 1))
        vk.set(keys.chunk_key(vid, 0), one, keepttl=True)
        vk.set(keys.chunk_key(vid, 1), zero, keepttl=True)

    def tamper_digests(vid: str, upload_id: str) -> None:
        name = ns.upload_digests(upload_id)
        vk.set(name, flip_bit(vk.get(name)), keepttl=True)

    def tamper_partial(vid: str, upload_id: str) -> None:
        (name,) = vk.scan_iter(match=f"{keys.PARTIAL_PREFIX}{vid}:*")
        vk.set(name, new_nonce(vk.get(name)), keepttl=True)

    client = await sealed.client()
    for damage in (tamper_chunk, swap_chunks, tamper_digests, tamper_partial):
        upload_id = await hung_up(sealed, prefix + damage.__name__, data)
        vid = json.loads(vk.hget(ns.upload(upload_id), "meta"))["vid"]
        assert vk.exists(keys.chunk_key(vid, 2))
        damage(vid, upload_id)
        refused = await resume(client, upload_id)
        assert (refused.code, refused.body["fatal"]) == ("not_found", False), damage.__name__
        assert "damaged" in refused.body["message"]
        assert not vk.exists(keys.chunk_key(vid, 0)), damage.__name__  # discarded
        assert (await client.get(prefix + damage.__name__)).code == "not_found"

    # Damaged after the RESUME checked it: the file is committed, and never served.
    upload_id = await hung_up(sealed, prefix + "late", data)
    vid = json.loads(vk.hget(ns.upload(upload_id), "meta"))["vid"]
    resumed = await resume(client, upload_id)
    assert resumed.ok, resumed.body
    tamper_chunk(vid, upload_id)
    assert (await finish(client, data, resumed.body["offset"])).ok
    assert damaged(await client.get(prefix + "late"), data)
    await client.close()
