"""A raw-frame test client: exactly the bytes docs/protocol.md describes, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from protocol.decoder import Sentinel, decode_control, server_decoder
from protocol.frames import HEADER, Frame, FrameType


def frame(frame_type: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(frame_type, len(payload)) + payload


def control(frame_type: int, obj: dict[str, Any] | None = None) -> bytes:
    return frame(frame_type, json.dumps(obj or {}).encode())


def upload_frames(
    key: str, data: bytes, *, frame_size: int = 65536, digest: bytes | None = None, **put: Any
) -> bytes:
    """PUT, DATA frames of ``frame_size``, END with the raw SHA-1 (or ``digest``)."""
    out = [control(FrameType.PUT, {"key": key, **put})]
    out += [
        frame(FrameType.DATA, data[i : i + frame_size]) for i in range(0, len(data), frame_size)
    ]
    out.append(frame(FrameType.END, hashlib.sha1(data).digest() if digest is None else digest))
    return b"".join(out)


@dataclass
class Reply:
    """A reply: its OK/ERROR object, DATA bytes, and END digest if any."""

    type: FrameType
    body: dict[str, Any]
    data: bytes = b""
    end: bytes | None = None
    frames: list[Frame] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.type is FrameType.OK

    @property
    def code(self) -> str | None:
        return None if self.ok else str(self.body.get("code"))


class WireClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = server_decoder(1 << 30)

    @classmethod
    async def connect(cls, host: str, port: int) -> WireClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frame(self, timeout: float = 10.0) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                got = self.decoder.next_frame()
                if not isinstance(got, Sentinel):
                    return got
                if got is Sentinel.CLOSED:
                    return None
                self.decoder.receive_data(await self.reader.read(1 << 20))

    async def reply(self) -> Reply:
        """One control reply (OK or ERROR)."""
        got = await self.frame()
        assert got is not None, "connection closed before a reply"
        assert got.type in (FrameType.OK, FrameType.ERROR), got
        return Reply(got.type, decode_control(got))

    async def stream(self) -> Reply:
        """A GET reply: OK, DATA*, then END or ERROR."""
        head = await self.reply()
        if not head.ok:
            return head
        data = bytearray()
        frames: list[Frame] = []
        while True:
            got = await self.frame()
            assert got is not None, "connection closed inside a GET stream"
            frames.append(got)
            if got.type is FrameType.DATA:
                data += got.payload
            elif got.type is FrameType.END:
                return Reply(FrameType.OK, head.body, bytes(data), got.payload, frames)
            else:
                assert got.type is FrameType.ERROR, got
                return Reply(FrameType.ERROR, decode_control(got), bytes(data), None, frames)

    async def request(self, frame_type: int, obj: dict[str, Any] | None = None) -> Reply:
        await self.send(control(frame_type, obj))
        return await self.reply()

    async def put(self, key: str, data: bytes, **kwargs: Any) -> Reply:
        """A whole upload; returns the final reply (the accepted OK is checked)."""
        await self.send(upload_frames(key, data, **kwargs))
        accepted = await self.reply()
        if not accepted.ok:
            return accepted
        assert set(accepted.body) >= {"upload_id", "chunk_size", "offset"}
        return await self.reply()

    async def get(self, key: str, **kwargs: Any) -> Reply:
        await self.send(control(FrameType.GET, {"key": key, **kwargs}))
        return await self.stream()

    async def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (EOF) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    got = self.decoder.next_frame()
                    if got is Sentinel.CLOSED:
                        return True
                    if got is Sentinel.NEED_DATA:
                        self.decoder.receive_data(await self.reader.read(1 << 20))
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
