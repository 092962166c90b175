"""HTTP test clients: the standard library's http.client, curl, and raw sockets.

http.client blocks, and the server under test runs in the test's own event
loop: every blocking call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import importlib.util
import json
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import Running


def file_path(key: str) -> str:
    """The path of a key under /v1/files/, percent-encoded as a client must."""
    return "/v1/files/" + urllib.parse.quote(key, safe="/")


def repr_digest(data: bytes) -> str:
    return f"sha=:{base64.b64encode(hashlib.sha1(data).digest()).decode()}:"


def sample(size: int) -> bytes:
    """Deterministic bytes with no two 32-byte blocks alike (chunks all differ)."""
    blocks = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))
    return blocks[:size]


def http_address(running: Running) -> tuple[str, int]:
    address = running.server.http_address
    assert address is not None, "the server was started without --http-port"
    return address


def scans() -> list[Path]:
    """Real NIfTI scans from nibabel's wheel (its test data), smallest first."""
    spec = importlib.util.find_spec("nibabel")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nibabel is not installed (requirements-dev.txt)")
    data = Path(next(iter(spec.submodule_search_locations))) / "tests" / "data"
    names = ("standard.nii.gz", "anatomical.nii", "example4d.nii.gz")
    return sorted((data / name for name in names), key=lambda p: p.stat().st_size)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return str(self.json()["code"])


class Http:
    """One keep-alive http.client connection to the HTTP door."""

    def __init__(self, address: tuple[str, int], token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection(*address, timeout=30)
        self.token = token

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        self.conn.request(method, path, body=body, headers=sent)
        response = self.conn.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    async def __call__(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        return await asyncio.to_thread(self.call, method, path, body, headers)

    def close(self) -> None:
        self.conn.close()


def curl_path() -> str:
    found = shutil.which("curl")
    if found is None:
        pytest.skip("curl is not installed (.ci/run installs it)")
    return found


async def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """Run curl; its exit code, output and messages (never raises on a failed transfer)."""
    argv = [curl_path(), "--silent", "--show-error", *args]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=timeout)


async def raw(address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body, read off a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(fields.get("content-length", "0")))
    return status, fields, body
