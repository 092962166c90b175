"""Helpers of the tus tests (tests/integration/test_tus.py): requests as a tus client sends them."""

from __future__ import annotations

import base64
import hashlib
import io

from tests.support.harness import Running
from tests.support.http import Answer, Http

TUS = {"Tus-Resumable": "1.0.0"}


class Stream(io.BytesIO):
    """A file in memory, never on disk; tuspy closes the stream it fingerprints."""

    def close(self) -> None:
        pass


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def endpoint(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}/v1/uploads/"


async def stored(server: Running, key: str, data: bytes) -> None:
    """The file, read back through the binary door: every byte, and its SHA-1."""
    client = await server.client()
    try:
        got = await client.get(key)
        assert got.ok, got.body
        assert got.data == data
        assert got.end == hashlib.sha1(data).digest()
    finally:
        await client.close()


async def create(web: Http, key: str, length: int, **more: str) -> str:
    made = await web(
        "POST",
        "/v1/uploads/",
        headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": meta(key=key, **more)},
    )
    assert made.status == 201, made.body
    return made.headers["location"]


async def patch(web: Http, location: str, offset: int, body: bytes, **headers: str) -> Answer:
    sent = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return await web("PATCH", location, body, sent)


def sha1_b64(data: bytes) -> str:
    return "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()
