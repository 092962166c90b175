"""The HTTP door driven by curl, as users type it (README's tour, docs/http.md).

Skipped when curl is not installed; .ci/run installs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from storage import keys
from tests.support.harness import CHUNK, Running
from tests.support.http import curl, curl_path, http_address, scans

pytestmark = [pytest.mark.asyncio, pytest.mark.config(http_port=0)]

#: curl's exit codes: a transfer that ended short, an HTTP error under --fail.
PARTIAL_FILE = 18
HTTP_ERROR = 22


def url(server: Running, key: str) -> str:
    host, port = http_address(server)
    return f"http://{host}:{port}/v1/files/{key}"


async def test_the_readme_tour(server: Running, prefix: str, tmp_path: Path) -> None:
    scan = scans()[-1]
    data = scan.read_bytes()
    at = url(server, prefix + "patients/1234/t1.nii.gz")

    up = await curl("--fail", "-T", str(scan), at)
    assert up.returncode == 0, up.stderr
    assert b'"sha1":"' + hashlib.sha1(data).hexdigest().encode() in up.stdout

    copy = tmp_path / "copy.nii.gz"
    down = await curl("--fail", "-o", str(copy), at)
    assert down.returncode == 0, down.stderr
    assert copy.read_bytes() == data

    head = await curl("--fail", "-I", at)
    assert head.returncode == 0
    fields = head.stdout.decode().lower()
    assert f"content-length: {len(data)}\r\n" in fields
    assert "etag: " in fields and "repr-digest: sha=:" in fields

    first = await curl("--fail", "-r", "0-99", at)
    assert first.stdout == data[:100]

    deleted = await curl("--fail", "-X", "DELETE", at)
    assert deleted.returncode == 0
    gone = await curl("--fail", "-o", str(tmp_path / "none"), at)
    assert gone.returncode == HTTP_ERROR


async def test_upload_from_a_pipe_is_chunked_and_checked(
    server: Running, prefix: str, tmp_path: Path
) -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    source = tmp_path / "scan.bin"
    source.write_bytes(data)
    at = url(server, prefix + "piped")
    digest = hashlib.sha1(data).hexdigest()
    # "-T -" reads stdin: curl does not know the size and sends a chunked body.
    with source.open("rb") as stdin:
        up = await _curl_stdin(stdin, "--fail", "-T", "-", "-H", f"X-Checksum-SHA1: {digest}", at)
    assert up.returncode == 0, up.stderr
    with source.open("rb") as stdin:
        wrong = await _curl_stdin(stdin, "-T", "-", "-H", f"X-Checksum-SHA1: {'0' * 40}", at)
    assert b'"code":"checksum_mismatch"' in wrong.stdout
    got = await curl("--fail", at)
    assert got.stdout == data


async def _curl_stdin(stdin: Any, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [curl_path(), "--silent", "--show-error", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, stdin=stdin, capture_output=True, timeout=60
    )


async def test_a_corrupt_chunk_is_a_short_transfer_for_curl(
    server: Running, vk: Any, prefix: str, tmp_path: Path
) -> None:
    data = hashlib.sha256(b"seed").digest() * (5 * CHUNK // 32)
    source = tmp_path / "scan.bin"
    source.write_bytes(data)
    at = url(server, prefix + "damaged")
    up = await curl("--fail", "-T", str(source), at)
    assert up.returncode == 0
    version = up.stdout.split(b'"version":"')[1].split(b'"')[0].decode()
    vk.setrange(keys.chunk_key(version, 2), 5, b"X" if data[2 * CHUNK + 5] != ord("X") else b"Y")
    out = tmp_path / "copy.bin"
    down = await curl("-o", str(out), at)
    assert down.returncode == PARTIAL_FILE, down.stderr
    assert out.stat().st_size < len(data)
