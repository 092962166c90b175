"""The tus door in the bench: a ``--size`` upload through tuspy, beside the binary door.

Run from :mod:`tests.tools.bench` in the same server as its other phases, only
when tuspy (requirements-dev.txt) is importable and the server listens in
plain HTTP. Two request sizes: 8 MiB PATCHes (one chunk each: every request
ends with a checkpoint and waits parked for the next, decision 0015) and
one unbounded PATCH (the whole file in one request, as tuspy sends it by
default). tuspy reads each request's bytes into memory before it sends
them; the server's memory stays bounded by chunks either way.

The whole-file SHA-1 travels in the ``sha1`` metadata, so the server checks
the file end to end exactly as the binary door's END does.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

MB = 1_000_000
MIB = 1024**2
#: Request sizes measured: 8 MiB, and None for the whole file in one PATCH.
REQUESTS: tuple[tuple[str, int | None], ...] = (("8mib", 8 * MIB), ("whole", None))


def available() -> bool:
    return importlib.util.find_spec("tusclient") is not None


class _View(io.RawIOBase):
    """A read-only file over the bench's payload: no copy until tuspy reads a request."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = base + offset
        return self._at

    def tell(self) -> int:
        return self._at

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._at + size
        piece = bytes(self._view[self._at : end])
        self._at += len(piece)
        return piece

    def close(self) -> None:
        pass  # tuspy closes the stream it measures; the payload lives on


def tus_upload(address: str, token: str | None, data: memoryview, chunk: int | None) -> float:
    """Seconds for one tuspy upload of ``data`` (``chunk`` bytes per PATCH; None: one)."""
    from tusclient.client import TusClient

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    key = f"bench/tus/{uuid.uuid4().hex[:8]}"
    sha1 = hashlib.sha1(data).hexdigest()
    client = TusClient(f"http://{address}/v1/uploads/", headers=headers)
    sizes: dict[str, Any] = {} if chunk is None else {"chunk_size": chunk}
    uploader = client.uploader(
        file_stream=_View(data), metadata={"key": key, "sha1": sha1}, **sizes
    )
    started = time.perf_counter()
    uploader.upload()
    seconds = time.perf_counter() - started
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("HEAD", f"/v1/files/{key}", headers=headers)
        stored = conn.getresponse()
        stored.read()
        if stored.getheader("ETag", "").split(":")[0] != f'"{sha1}':
            raise RuntimeError(f"the tus upload was not stored whole (HEAD {stored.status})")
        conn.request("DELETE", f"/v1/files/{key}", headers=headers)
        conn.getresponse().read()
    finally:
        conn.close()
    return seconds


async def phases(
    address: str | None,
    token: str | None,
    data: memoryview,
    repeat: int,
    mbps: Callable[[int, list[float]], dict[str, Any]],
) -> dict[str, Any]:
    """``tus_upload_mbps_8mib`` and ``tus_upload_mbps_whole``; nothing without tuspy."""
    import asyncio

    if address is None or not available():
        return {}
    found: dict[str, Any] = {}
    for name, chunk in REQUESTS:
        seconds = []
        for rep in range(repeat):
            print(f"tus with tuspy, {name} requests, run {rep + 1}/{repeat} ...", flush=True)
            seconds.append(await asyncio.to_thread(tus_upload, address, token, data, chunk))
        found[f"tus_upload_mbps_{name}"] = mbps(len(data), seconds)
    return found


def report(entry: dict[str, Any], size: int, fmt: Callable[[Any], str]) -> None:
    """One line beside the binary door's upload, when the tus phases ran."""
    if "tus_upload_mbps_8mib" not in entry:
        return
    binary = entry["upload_mbps"]["median"]
    parts = []
    for name, label in (("8mib", "8 MiB requests"), ("whole", "one request")):
        got = entry[f"tus_upload_mbps_{name}"]
        parts.append(f"{label} {fmt(got)} MB/s ({got['median'] / binary:.2f} x binary)")
    print(f"tus door, tuspy, {size / MB:.0f} MB: " + ", ".join(parts))
