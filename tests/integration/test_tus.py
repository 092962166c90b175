"""tus 1.0.0 on the HTTP door, with the real clients: tuspy, and tus-js-client under node.

Real server, real Valkey, real TCP. Every upload is read back through the
binary door and checked bit for bit and by SHA-1 (docs/http.md section 7).
The protocol's edge cases go through http.client, one request at a time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.harness import CHUNK, ROOT, Running
from tests.support.http import Http, http_address, raw, read_response, sample, scans
from tests.support.resume import until
from tests.support.tus import TUS, Stream, create, endpoint, meta, patch, sha1_b64, stored

tusclient = pytest.importorskip("tusclient.client", reason="tuspy is not installed")
from tusclient.exceptions import TusCommunicationError  # noqa: E402
from tusclient.storage.filestorage import FileStorage  # noqa: E402

pytestmark = [pytest.mark.asyncio, pytest.mark.config(http_port=0)]

#: Several chunks and a bit: no two chunks alike.
BIG = sample(6 * CHUNK + 321)
JS = ROOT / "tests" / "js"


@pytest.fixture
def web(server: Running) -> Iterator[Http]:
    client = Http(http_address(server))
    yield client
    client.close()


def tuspy_upload(url: str, data: bytes, key: str, **kwargs: Any) -> Any:
    client = tusclient.TusClient(url)
    uploader = client.uploader(file_stream=Stream(data), metadata={"key": key}, **kwargs)
    uploader.upload()
    return uploader


# -- tuspy ------------------------------------------------------------------


async def test_tuspy_uploads_real_scans_and_multi_chunk_files(server: Running, prefix: str) -> None:
    url = endpoint(http_address(server))
    files = [(scan.name, scan.read_bytes()) for scan in scans()] + [("big.bin", BIG)]
    for name, data in files:
        key = f"{prefix}scans/{name}"
        # Request sizes that do not line up with chunks; a checksum on every PATCH.
        await asyncio.to_thread(
            tuspy_upload, url, data, key, chunk_size=CHUNK + 4321, upload_checksum=True
        )
        await stored(server, key, data)
    key = f"{prefix}one-request.bin"  # tuspy's default: the whole file in one PATCH
    await asyncio.to_thread(tuspy_upload, url, BIG, key)
    await stored(server, key, BIG)


async def test_tuspy_resumes_a_cut_upload_from_every_byte_received(
    server: Running, prefix: str, tmp_path: Path
) -> None:
    proxy = FaultProxy(http_address(server))
    await proxy.start()
    try:
        url = endpoint(proxy.address)
        key = f"{prefix}cut.bin"
        # URLs only, never file bytes.
        urls = FileStorage(str(tmp_path / "tus-urls.json"))  # type: ignore[no-untyped-call]
        # PATCHes of 4 chunks: the second is cut about 1.5 chunks into its body.

        def first() -> None:
            up = tusclient.TusClient(url).uploader(
                file_stream=Stream(BIG),
                metadata={"key": key},
                chunk_size=4 * CHUNK,
                store_url=True,
                url_storage=urls,
            )
            up.upload_chunk()  # the first PATCH gets through whole
            proxy.arm(CHUNK * 3 // 2 + 600)  # the next connection breaks in its body
            up.upload_chunk()

        with pytest.raises(TusCommunicationError):
            await asyncio.to_thread(first)
        await until(lambda: not server.server.connections)

        def resume() -> int:
            up = tusclient.TusClient(url).uploader(
                file_stream=Stream(BIG),
                metadata={"key": key},
                chunk_size=4 * CHUNK,
                store_url=True,
                url_storage=urls,
            )
            offset = int(up.offset)  # tuspy asked HEAD for it
            up.upload()
            return offset

        offset = await asyncio.to_thread(resume)
        # Every byte the server read was kept, not only whole requests or chunks.
        assert 5 * CHUNK < offset < 6 * CHUNK
        await stored(server, key, BIG)
        urls.close()  # type: ignore[no-untyped-call]
    finally:
        await proxy.close()


# -- tus-js-client under node -----------------------------------------------


def node_client() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: tus-js-client cannot run")
    if not (JS / "node_modules" / "tus-js-client").is_dir():
        pytest.skip("tus-js-client is not installed: npm ci --prefix tests/js (.ci/run does)")
    return node


async def test_tus_js_client_uploads_and_resumes(server: Running, prefix: str) -> None:
    node = node_client()
    proxy = FaultProxy(http_address(server))
    await proxy.start()
    try:
        key = f"{prefix}js/scan.nii"
        data = scans()[-1].read_bytes()
        # The first connection (the POST, then a PATCH on keep-alive) breaks mid-upload.
        proxy.arm(2 * CHUNK + 1000)
        spec = {"endpoint": endpoint(proxy.address), "key": key, "chunkSize": 3 * CHUNK}
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS / "upload.mjs"),
            json.dumps(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(data), timeout=60)
        assert proc.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["retries"] >= 1  # it did break, and tus-js-client resumed
        assert report["url"].startswith(endpoint(proxy.address) + "tus.")
        await stored(server, key, data)
    finally:
        await proxy.close()


# -- the protocol's edge cases -----------------------------------------------


async def test_options_and_the_tus_resumable_header(web: Http, server: Running) -> None:
    told = await web("OPTIONS", "/v1/uploads/")
    assert told.status == 204
    assert told.headers["tus-resumable"] == "1.0.0"
    assert told.headers["tus-version"] == "1.0.0"
    assert set(told.headers["tus-extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert told.headers["tus-checksum-algorithm"] == "sha1"
    assert told.headers["tus-max-size"] == str(server.config.max_file_size)
    for headers in ({}, {"Tus-Resumable": "0.2.2"}):
        refused = await web("POST", "/v1/uploads/", headers={**headers, "Upload-Length": "5"})
        assert refused.status == 412
        assert refused.headers["tus-version"] == "1.0.0"
        assert refused.headers["tus-resumable"] == "1.0.0"
    unknown = await web("HEAD", "/v1/uploads/tus.nosuchupload", headers=TUS)
    assert unknown.status == 404
    assert unknown.headers["tus-resumable"] == "1.0.0"
    assert "upload-offset" not in unknown.headers


async def test_offsets_content_type_and_creation_with_upload(
    web: Http, server: Running, prefix: str
) -> None:
    key = f"{prefix}edges.bin"
    made = await web(
        "POST",
        "/v1/uploads/",
        BIG[:1000],
        {
            **TUS,
            "Upload-Length": str(len(BIG)),
            "Upload-Metadata": meta(key=key, content_type="application/dicom"),
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert made.status == 201, made.body
    location = made.headers["location"]
    assert made.headers["upload-offset"] == "1000"
    assert made.headers["upload-expires"].endswith(" GMT")

    wrong = await patch(web, location, 999, BIG[999:2000])
    assert (wrong.status, wrong.code) == (409, "bad_request")
    web.close()  # the refused body was not read: that connection is closing
    plain = await web(
        "PATCH",
        location,
        BIG[1000:2000],
        {**TUS, "Upload-Offset": "1000", "Content-Type": "application/octet-stream"},
    )
    assert plain.status == 415
    web.close()
    head = await web("HEAD", location, headers=TUS)
    assert head.status == 200
    assert (head.headers["upload-offset"], head.headers["upload-length"]) == (
        "1000",
        str(len(BIG)),
    )
    assert head.headers["cache-control"] == "no-store"
    assert "key " in head.headers["upload-metadata"]

    done = await patch(web, location, 1000, BIG[1000:])
    assert done.status == 204, done.body
    assert done.headers["upload-offset"] == str(len(BIG))
    sha1 = hashlib.sha1(BIG).hexdigest()
    assert done.headers["etag"].startswith(f'"{sha1}:')
    assert (
        done.headers["repr-digest"]
        == "sha=:" + base64.b64encode(hashlib.sha1(BIG).digest()).decode() + ":"
    )
    await stored(server, key, BIG)
    got = await web("GET", "/v1/files/" + key)
    assert got.headers["content-type"] == "application/dicom"
    assert (await web("HEAD", location, headers=TUS)).status == 404  # finished


async def test_a_checksum_mismatch_drops_exactly_that_patch(
    web: Http, server: Running, prefix: str
) -> None:
    key = f"{prefix}checked.bin"
    location = await create(web, key, len(BIG))
    first = CHUNK // 2 + 17  # ends inside chunk 0
    ok = await patch(web, location, 0, BIG[:first], Upload_Checksum=sha1_b64(BIG[:first]))
    assert (ok.status, ok.headers["upload-offset"]) == (204, str(first))
    # The next request crosses two chunk boundaries and lies about its bytes.
    second = 3 * CHUNK + 5
    body = BIG[first:second]
    bad = await patch(web, location, first, body, Upload_Checksum=sha1_b64(body + b"x"))
    assert (bad.status, bad.code) == (460, "checksum_mismatch")
    head = await web("HEAD", location, headers=TUS)
    assert head.headers["upload-offset"] == str(first)
    again = await patch(web, location, first, body, Upload_Checksum=sha1_b64(body))
    assert (again.status, again.headers["upload-offset"]) == (204, str(second))
    last = await patch(web, location, second, BIG[second:])
    assert last.status == 204
    await stored(server, key, BIG)


async def test_the_whole_file_sha1_is_checked_at_the_end(
    web: Http, server: Running, prefix: str
) -> None:
    key = f"{prefix}vouched.bin"
    wrong = hashlib.sha1(b"another file").hexdigest()
    location = await create(web, key, len(BIG), sha1=wrong)
    half = len(BIG) // 2
    assert (await patch(web, location, 0, BIG[:half])).status == 204
    refused = await patch(web, location, half, BIG[half:])
    assert (refused.status, refused.code) == (409, "checksum_mismatch")
    assert refused.json()["expected"] == wrong
    assert refused.json()["actual"] == hashlib.sha1(BIG).hexdigest()
    assert (await web("HEAD", location, headers=TUS)).status == 404  # discarded
    assert (await web("HEAD", "/v1/files/" + key)).status == 404  # nothing stored

    right = await create(web, key, len(BIG), sha1=hashlib.sha1(BIG).hexdigest())
    assert (await patch(web, right, 0, BIG)).status == 204
    await stored(server, key, BIG)


async def test_terminate_then_head(web: Http, prefix: str) -> None:
    location = await create(web, f"{prefix}gone.bin", len(BIG))
    assert (await patch(web, location, 0, BIG[: 2 * CHUNK + 9])).status == 204
    assert (await web("DELETE", location, headers=TUS)).status == 204
    assert (await web("HEAD", location, headers=TUS)).status == 404
    assert (await web("DELETE", location, headers=TUS)).status == 404
    again = await patch(web, location, 2 * CHUNK + 9, BIG[2 * CHUNK + 9 :])
    assert again.status == 404


@pytest.mark.config(http_port=0, resume_ttl=1)
async def test_an_upload_expires_after_the_resume_window(web: Http, prefix: str) -> None:
    location = await create(web, f"{prefix}late.bin", len(BIG))
    assert (await patch(web, location, 0, BIG[:CHUNK])).status == 204
    await asyncio.sleep(2.5)
    late = await web("HEAD", location, headers=TUS)
    assert late.status == 410
    assert "upload-offset" not in late.headers
    assert (await patch(web, location, CHUNK, BIG[CHUNK:])).status == 410


async def test_a_new_request_takes_the_upload_from_a_stalled_patch(
    web: Http, server: Running, prefix: str
) -> None:
    key = f"{prefix}stalled.bin"
    location = await create(web, key, len(BIG))
    reader, writer = await raw(http_address(server))
    sent = CHUNK + 100
    writer.write(
        (
            f"PATCH {location} HTTP/1.1\r\nHost: valise\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(BIG)}\r\n\r\n"
        ).encode()
        + BIG[:sent]
    )
    await writer.drain()
    entries = server.server.state.parked._entries
    await until(lambda: any(entry.stop is not None for entry in entries.values()))
    # The client gave up on that request (it never sends the rest) and asks HEAD.
    head = await web("HEAD", location, headers=TUS)
    assert head.status == 200
    offset = int(head.headers["upload-offset"])
    assert 0 <= offset <= sent
    status, fields, body = await read_response(reader)
    assert (status, json.loads(body)["code"]) == (409, "superseded")
    assert fields["tus-resumable"] == "1.0.0"
    writer.close()
    assert (await patch(web, location, offset, BIG[offset:])).status == 204
    await stored(server, key, BIG)


async def test_an_empty_file_and_metadata_kept_out_of_the_logs(
    web: Http, server: Running, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = f"{prefix}patient-Jane-Doe/empty.dcm"
    made = await web(
        "POST",
        "/v1/uploads/",
        headers={
            **TUS,
            "Upload-Length": "0",
            "Upload-Metadata": meta(filename=key, filetype="application/dicom"),
        },
    )
    assert made.status == 201, made.body
    assert made.headers["upload-offset"] == "0"
    await stored(server, key, b"")
    bad = await web(
        "POST",
        "/v1/uploads/",
        headers={**TUS, "Upload-Length": "5", "Upload-Metadata": meta(key=key, sha1="Jane")},
    )
    assert bad.status == 400
    assert "Jane" not in bad.body.decode()
    assert caplog.records  # the access log did record these requests
    assert "Jane" not in caplog.text
    assert base64.b64encode(key.encode()).decode()[:20] not in caplog.text


async def test_a_writer_sent_back_to_valkey_resumes_from_there(
    web: Http, server: Running, prefix: str
) -> None:
    """Idle, over the limit, on another server: the next PATCH rebuilds from Valkey."""
    parked = server.server.state.parked
    parked.idle = 0.05
    key = f"{prefix}evicted.bin"
    location = await create(web, key, len(BIG))
    middle = 2 * CHUNK + 999  # a partial chunk is stored at the checkpoint
    assert (await patch(web, location, 0, BIG[:middle])).status == 204
    await until(lambda: len(parked) == 0 and not parked._tasks)
    head = await web("HEAD", location, headers=TUS)
    assert head.headers["upload-offset"] == str(middle)
    assert (await patch(web, location, middle, BIG[middle:])).status == 204
    await stored(server, key, BIG)
