"""Frame types, limits and the encoder (docs/protocol.md section 1).

A frame is ``type u8 | length u32 big-endian | payload``. The encoder returns
``[header, payload]`` and never joins them: a 1 MiB DATA payload is handed to the
transport as is (h11's data passthrough).
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

from protocol import compact_json

#: ``type u8 | length u32``, network byte order.
HEADER = struct.Struct("!BI")
HEADER_SIZE = HEADER.size

#: Control payloads are one JSON object of at most 64 KiB.
MAX_CONTROL = 64 * 1024
#: ``max_frame`` may never be set below this, and a client that skipped HELLO
#: keeps its DATA frames at or under it.
MIN_MAX_FRAME = 64 * 1024
DEFAULT_MAX_FRAME = 1024 * 1024

SHA1_SIZE = 20
SHA1_HEX_SIZE = 40

PROTOCOL_VERSION = 1
#: Longest ``upload_id``, ``version`` and event id a server hands out (section 6).
MAX_ID = 128


class FrameType(enum.IntEnum):
    """Wire frame types, docs/protocol.md section 1."""

    #: client -> server: version, optional token.
    HELLO = 0x01
    #: client -> server: start an upload.
    PUT = 0x02
    #: both: raw file bytes.
    DATA = 0x03
    #: both: SHA-1 trailer, 20 raw bytes or 40 hex characters.
    END = 0x04
    GET = 0x05
    STAT = 0x06
    DELETE = 0x07
    LIST = 0x08
    PING = 0x09
    #: client -> server: discard the upload in progress.
    ABORT = 0x0A
    #: client -> server: continue a resumable upload (revision 2, section 6.1).
    RESUME = 0x0B
    #: client -> server: follow change events (revision 2, section 6.3).
    SUBSCRIBE = 0x0C
    #: server -> client: success reply.
    OK = 0x80
    #: server -> client: a change event on a subscribed connection (section 6.3).
    EVENT = 0x81
    #: server -> client: failure reply.
    ERROR = 0x8F


#: Types whose payload is a JSON object.
CONTROL_TYPES = frozenset(
    {
        FrameType.HELLO,
        FrameType.PUT,
        FrameType.GET,
        FrameType.STAT,
        FrameType.DELETE,
        FrameType.LIST,
        FrameType.PING,
        FrameType.ABORT,
        FrameType.RESUME,
        FrameType.SUBSCRIBE,
        FrameType.OK,
        FrameType.EVENT,
        FrameType.ERROR,
    }
)
#: Types a client may send; anything else from a client is ``bad_frame``.
CLIENT_TYPES = frozenset(t for t in FrameType if t < FrameType.OK)
#: Types a server may send.
SERVER_TYPES = frozenset(
    {FrameType.DATA, FrameType.END, FrameType.OK, FrameType.EVENT, FrameType.ERROR}
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``payload`` is raw bytes; see :func:`decode_control`."""

    type: FrameType
    payload: bytes


def encode_frame(
    frame_type: FrameType, payload: bytes | memoryview = b""
) -> list[bytes | memoryview]:
    """``[header, payload]``: the caller hands both to ``writelines`` without joining."""
    return [HEADER.pack(frame_type, len(payload)), payload]


def encode_control(frame_type: FrameType, obj: dict[str, Any]) -> bytes:
    """A control frame as one small bytes object (payload capped at 64 KiB)."""
    payload = _json(obj)
    if len(payload) > MAX_CONTROL:
        raise ValueError(f"control payload of {len(payload)} bytes exceeds {MAX_CONTROL}")
    return HEADER.pack(frame_type, len(payload)) + payload


def control_size(obj: dict[str, Any]) -> int:
    """Encoded payload size of ``obj``, for callers that must stay under MAX_CONTROL."""
    return len(_json(obj))


def list_page(
    entries: list[dict[str, Any]], cursor: str | None, start: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The LIST entries that fit one control frame, and the cursor to go on from:
    ``cursor`` when all fit, else the last key that fit (``start``, the request's
    cursor, when none did)."""
    page: list[dict[str, Any]] = []
    budget = MAX_CONTROL - control_size({"files": [], "cursor": "x" * 2048})
    for entry in entries:
        cost = control_size(entry) + 1
        if cost > budget:
            # The page is full: continue after the last entry that fit.
            return page, page[-1]["key"] if page else start
        budget -= cost
        page.append(entry)
    return page, cursor


def _json(obj: dict[str, Any]) -> bytes:
    try:
        return compact_json.dumps(obj)
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form; JSON's \u escapes spell it.
        return json.dumps(obj, separators=(",", ":")).encode()
