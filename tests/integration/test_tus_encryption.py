"""tus uploads with --encryption-key-file: sealed at every step like the binary door's.

A tus upload's partial chunk is checkpointed to Valkey after every PATCH and
its metadata (filename, type, the whole file's SHA-1) sits in the upload's
state: all of it must be sealed (docs/security.md, docs/http.md section 7).
Real server, real Valkey (one node or the cluster); the helpers and the
sealed server come from test_encryption.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from typing import Any

import pytest

from storage import keys
from tests.integration.test_encryption import (  # noqa: F401 - fixtures
    SECRET_TYPE,
    key_file,
    no_trace,
    sealed,
    valkey_server,
)
from tests.support.harness import CHUNK, Running
from tests.support.http import Http, http_address, raw
from tests.support.resume import until
from tests.support.tus import TUS, meta, patch, stored

pytestmark = pytest.mark.asyncio

#: Set only in the tus metadata: found anywhere in Valkey, it was stored in clear.
FILENAME = "patient-Jane-Roe-scan.nii"


def checked(vk: Any, data: bytes, secrets: list[bytes], upload_id: str) -> dict[str, Any]:
    """No trace of the file in Valkey, every key with a TTL; the upload's clear facts."""
    names = no_trace(vk, data, secrets)
    assert all(vk.pttl(name) != -1 for name in names)
    raw_meta = vk.hget(keys.NamespaceKeys("").upload(upload_id), "meta")
    facts: dict[str, Any] = json.loads(raw_meta) if raw_meta else {}
    return facts


def secrets_of(data: bytes, cuts: list[int], metadata: str) -> list[bytes]:
    """What Valkey must never hold in clear: every chunk's SHA-1, every partial
    chunk's at each checkpoint, the whole file's, the metadata in any form."""
    out = [hashlib.sha1(data[i : i + CHUNK]).digest() for i in range(0, len(data), CHUNK)]
    out += [hashlib.sha1(data[cut - cut % CHUNK : cut]).digest() for cut in cuts if cut % CHUNK]
    whole = hashlib.sha1(data)
    out += [whole.digest(), whole.hexdigest().encode(), base64.b64encode(whole.digest())]
    out += [FILENAME.encode(), SECRET_TYPE.encode(), metadata.encode()]
    out += [part.split()[1].encode() for part in metadata.split(",")[1:]]  # each base64 value
    return out


async def test_a_tus_upload_is_sealed_at_every_step(
    sealed: Running,  # noqa: F811 - the fixture
    vk: Any,
    prefix: str,
) -> None:
    data = os.urandom(5 * CHUNK + 777)
    first, second, cut = 1000, 2 * CHUNK + 500, 3 * CHUNK + 4321
    key = prefix + "scan.bin"
    metadata = meta(
        key=key, filename=FILENAME, filetype=SECRET_TYPE, sha1=hashlib.sha1(data).hexdigest()
    )
    secrets = secrets_of(data, [first, second, cut], metadata)
    web = Http(http_address(sealed))
    try:
        # Creation with upload: the first bytes in the POST.
        made = await web(
            "POST",
            "/v1/uploads/",
            data[:first],
            {
                **TUS,
                "Upload-Length": str(len(data)),
                "Upload-Metadata": metadata,
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert (made.status, made.headers["upload-offset"]) == (201, str(first)), made.body
        location = made.headers["location"]
        upload_id = location.rsplit("/", 1)[1]
        facts = checked(vk, data, secrets, upload_id)
        assert (facts["encrypted"], facts["size"]) == (True, len(data))

        # A PATCH across two chunk boundaries, with a checksum.
        body = data[first:second]
        digest = "sha1 " + base64.b64encode(hashlib.sha1(body).digest()).decode()
        done = await patch(web, location, first, body, Upload_Checksum=digest)
        assert (done.status, done.headers["upload-offset"]) == (204, str(second)), done.body
        checked(vk, data, secrets, upload_id)

        # A PATCH cut inside its body: every byte read is checkpointed, sealed;
        # then the parked writer is let go, so the next PATCH rebuilds from Valkey.
        parked = sealed.server.state.parked
        parked.idle = 0.05
        still_open = len(sealed.server.connections)
        _, writer = await raw(http_address(sealed))
        writer.write(
            (
                f"PATCH {location} HTTP/1.1\r\nHost: valise\r\nTus-Resumable: 1.0.0\r\n"
                f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {second}\r\n"
                f"Content-Length: {len(data) - second}\r\n\r\n"
            ).encode()
            + data[second:cut]
        )
        await writer.drain()
        writer.close()
        await until(lambda: len(sealed.server.connections) <= still_open)
        checked(vk, data, secrets, upload_id)
        partial = list(vk.scan_iter(match=f"{keys.PARTIAL_PREFIX}{facts['vid']}:*"))
        assert len(partial) == 1  # the checkpoint's partial chunk, sealed

        # HEAD opens the sealed facts; the next PATCH opens the sealed chunks.
        await until(lambda: len(parked) == 0 and not parked._tasks)
        head = await web("HEAD", location, headers=TUS)
        assert head.status == 200, head.body
        assert head.headers["upload-offset"] == str(cut)
        assert head.headers["upload-metadata"] == metadata
        last = await patch(web, location, cut, data[cut:])
        assert last.status == 204, last.body
        await stored(sealed, key, data)
        got = await web("GET", "/v1/files/" + key)
        assert (got.status, got.headers["content-type"]) == (200, SECRET_TYPE)
        checked(vk, data, secrets, upload_id)
        assert (await web("HEAD", location, headers=TUS)).status == 404  # finished

        # Termination: the upload and every byte of it are gone.
        other = os.urandom(2 * CHUNK + 99)
        other_meta = meta(key=prefix + "gone.bin", filename=FILENAME, filetype=SECRET_TYPE)
        made = await web(
            "POST",
            "/v1/uploads/",
            headers={**TUS, "Upload-Length": str(len(other)), "Upload-Metadata": other_meta},
        )
        assert made.status == 201, made.body
        gone = made.headers["location"]
        assert (await patch(web, gone, 0, other[: CHUNK + 7])).status == 204
        gone_id = gone.rsplit("/", 1)[1]
        vid = checked(vk, other, secrets_of(other, [CHUNK + 7], other_meta), gone_id)["vid"]
        assert vk.exists(keys.chunk_key(vid, 0))
        assert (await web("DELETE", gone, headers=TUS)).status == 204
        assert (await web("HEAD", gone, headers=TUS)).status == 404
        assert not [name for name in vk.scan_iter() if vid.encode() in name]
        assert not [name for name in vk.scan_iter() if gone_id.encode() in name]
    finally:
        web.close()
