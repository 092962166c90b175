"""Per-connection request state machine (docs/protocol.md sections 1-2, 6), sans-IO.

The whole table in one place:

==========  ===========================  ===============================
state       frame                        result
==========  ===========================  ===============================
HANDSHAKE   HELLO                        Hello, -> IDLE
HANDSHAKE   anything else                unauthorized, fatal
IDLE        HELLO/GET/STAT/DELETE/...    the request, stays IDLE
IDLE        PUT                          Put, -> UPLOADING
IDLE        RESUME                       Resume, stays IDLE until the
                                         server accepts it:
                                         resume_upload() -> UPLOADING
IDLE        SUBSCRIBE                    Subscribe, stays IDLE until the
                                         server accepts it:
                                         subscribed() -> SUBSCRIBED
IDLE        DATA/END/ABORT               bad_frame, fatal
UPLOADING   DATA                         Data (counted, hashed)
UPLOADING   END                          UploadEnd if digest and size
                                         match, else a non-fatal error;
                                         -> IDLE either way
                                         (hash_uploads=False, or a
                                         resumed upload: the caller
                                         checks the digest)
UPLOADING   ABORT                        Abort, -> IDLE
UPLOADING   any request                  bad_frame, fatal
SUBSCRIBED  PING                         Ping, stays SUBSCRIBED
SUBSCRIBED  anything else                bad_frame, fatal
any         after a fatal error          nothing more is decoded
==========  ===========================  ===============================

HANDSHAKE is the start state only when tokens are configured; otherwise the
connection starts IDLE and HELLO is optional. A client waits for RESUME's OK
before it sends DATA (section 6.1), so DATA right behind a RESUME that the
server has not accepted yet is ``bad_frame`` like any DATA outside an upload.
"""

from __future__ import annotations

import enum
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol import requests
from protocol.decoder import (
    CLOSED,
    NEED_DATA,
    FrameDecoder,
    Sentinel,
    control_object,
    decode_digest,
)
from protocol.errors import ErrorCode, ProtocolError, bad_frame, checksum_mismatch
from protocol.frames import CLIENT_TYPES, FrameType


class State(enum.Enum):
    HANDSHAKE = "handshake"
    IDLE = "idle"
    UPLOADING = "uploading"
    SUBSCRIBED = "subscribed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Data:
    """A DATA frame's bytes inside an upload."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class UploadEnd:
    """END with a size that matches what was received.

    ``sha1`` is END's digest (lowercase hex). With ``hash_uploads`` (the
    default) it has been checked against the bytes received; without, the
    caller checks it (the server hashes in its chunk writer, off the event
    loop) and ``verified`` is False.
    """

    size: int
    sha1: str
    verified: bool = True


@dataclass(frozen=True, slots=True)
class Abort:
    pass


Event = requests.Request | Data | UploadEnd | Abort


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame: int
    max_file_size: int
    max_ttl: int


class _Upload:
    """Running count and SHA-1 of the upload in progress."""

    __slots__ = ("declared", "hasher", "received")

    def __init__(self, declared: int | None, *, hashed: bool) -> None:
        self.declared = declared
        self.received = 0
        self.hasher = hashlib.sha1(usedforsecurity=False) if hashed else None


_PARSERS: dict[FrameType, Callable[[dict[str, Any]], requests.Request]] = {
    FrameType.HELLO: requests.parse_hello,
    FrameType.GET: requests.parse_get,
    FrameType.STAT: requests.parse_stat,
    FrameType.DELETE: requests.parse_delete,
    FrameType.LIST: requests.parse_list,
    FrameType.RESUME: requests.parse_resume,
    FrameType.SUBSCRIBE: requests.parse_subscribe,
}


#: Every revision-2 feature (docs/protocol.md section 6), as HELLO names them.
FEATURES = frozenset({"resume", "versions", "subscribe", "if_absent"})
#: Frame types that exist only with a feature.
_FEATURE_OF = {FrameType.RESUME: "resume", FrameType.SUBSCRIBE: "subscribe"}


def _refusal(state: State, features: frozenset[str], frame_type: FrameType) -> ProtocolError | None:
    """Why a connection in ``state`` refuses a ``frame_type`` frame from its header
    alone (the table at the top), or None when it does not."""
    if state is State.HANDSHAKE and frame_type is not FrameType.HELLO:
        return ProtocolError(
            ErrorCode.UNAUTHORIZED, "this server requires HELLO with a token first", fatal=True
        )
    needs = _FEATURE_OF.get(frame_type)
    if needs is not None and needs not in features:
        return bad_frame(f"{frame_type.name} is not offered by this server")
    if state is State.SUBSCRIBED and frame_type is not FrameType.PING:
        return bad_frame(f"{frame_type.name} on a subscribed connection; only PING may come")
    upload_frame = frame_type in (FrameType.DATA, FrameType.END, FrameType.ABORT)
    if state is State.UPLOADING and not upload_frame:
        return bad_frame(
            f"{frame_type.name} inside an upload; only DATA, END or ABORT may follow PUT"
        )
    if state is not State.UPLOADING and upload_frame:
        return bad_frame(f"{frame_type.name} outside an upload")
    return None


@functools.cache
def _passes(features: frozenset[str]) -> dict[State, frozenset[FrameType]]:
    """Per state, the client frame types :func:`_refusal` lets through: worked out
    once per set of features, so a frame's check is one set lookup (the enum
    lookups of the checks themselves were ~1 us a frame on CPython 3.11)."""
    return {
        state: frozenset(t for t in CLIENT_TYPES if _refusal(state, features, t) is None)
        for state in State
    }


class ServerConnection:
    """Bytes from a client in, validated events out.

    ``next_event`` returns an event, NEED_DATA or CLOSED, or raises
    :class:`ProtocolError`. After a fatal error the connection is FAILED and
    decodes nothing more; after a non-fatal one it goes on.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        hello_required: bool = False,
        hash_uploads: bool = True,
        features: frozenset[str] = FEATURES,
    ) -> None:
        self.limits = limits
        #: The revision-2 features the server offers; a request of one it does
        #: not offer is an unknown frame type, as on a revision-1 server.
        self.features = features
        self.hash_uploads = hash_uploads
        self.state = State.HANDSHAKE if hello_required else State.IDLE
        self._passes = _passes(features)
        self._decoder = FrameDecoder(max_data=limits.max_frame, check=self._check_type)
        self._upload: _Upload | None = None
        #: The upload a fatal error cut short, for :meth:`unfinished_data`.
        self._cut: _Upload | None = None

    @property
    def in_frame(self) -> bool:
        return self._decoder.in_frame

    @property
    def buffered(self) -> int:
        """Bytes received and not handed out yet: more requests may be waiting."""
        return self._decoder.buffered

    @property
    def uploading(self) -> bool:
        return self.state is State.UPLOADING

    @property
    def upload_received(self) -> int:
        return self._upload.received if self._upload else 0

    def receive_data(self, data: bytes) -> None:
        self._decoder.receive_data(data)

    def next_event(self) -> Event | Sentinel:
        if self.state is State.FAILED:
            return NEED_DATA
        try:
            raw = self._decoder.next_raw()
            if isinstance(raw, Sentinel):
                return raw
            frame_type, payload = raw
            return self._handle(frame_type, payload)
        except ProtocolError as exc:
            if exc.fatal:
                self.fail()
            raise

    def resume_upload(self, declared: int | None, offset: int) -> None:
        """The server accepted a RESUME: DATA continues the file from byte ``offset``.

        Limits and the declared size are the original PUT's; the digest at END
        covers the whole file, which this machine never saw, so the caller
        checks it (UploadEnd.verified is False).
        """
        if self.state is not State.IDLE:
            raise RuntimeError(f"resume_upload() in state {self.state.name}")  # our bug
        self._upload = _Upload(declared, hashed=False)
        self._upload.received = offset
        self.state = State.UPLOADING

    def subscribed(self) -> None:
        """The server accepted a SUBSCRIBE: only PING may come from now on."""
        if self.state is not State.IDLE:
            raise RuntimeError(f"subscribed() in state {self.state.name}")  # our bug
        self.state = State.SUBSCRIBED

    def fail(self) -> None:
        """The server gave up on this connection (timeout, storage fault)."""
        self.state = State.FAILED
        self._cut = self._upload or self._cut
        self._upload = None

    def unfinished_data(self) -> bytes:
        """The bytes of a DATA frame the upload's connection ended in the middle of.

        A resumable upload may keep them (docs/protocol.md section 6.1: counting
        them and not counting them are both correct); only as many as the
        upload's limit still allows.
        """
        upload = self._upload or self._cut
        if upload is None:
            return b""
        data = self._decoder.partial_payload(FrameType.DATA)
        limit = self.limits.max_file_size if upload.declared is None else upload.declared
        return data[: max(limit - upload.received, 0)]

    def _check_type(self, frame_type: FrameType) -> None:
        """Refuse, from the header alone, a frame type the current state forbids."""
        if frame_type in self._passes[self.state]:
            return  # every frame of a well-behaved client: one lookup
        error = _refusal(self.state, self.features, frame_type)
        if error is not None:
            raise error

    def _handle(self, frame_type: FrameType, payload: bytes) -> Event:
        if self.state is State.UPLOADING:
            return self._handle_upload(frame_type, payload)
        obj = control_object(frame_type, payload)
        if frame_type is FrameType.PING:
            return requests.Ping(payload or b"{}")
        if frame_type is FrameType.PUT:
            put = requests.parse_put(
                obj, max_file_size=self.limits.max_file_size, max_ttl=self.limits.max_ttl
            )
            self._upload = _Upload(put.size, hashed=self.hash_uploads)
            self.state = State.UPLOADING
            return put
        request = _PARSERS[frame_type](obj)
        if isinstance(request, requests.Hello):
            if request.version != 1:
                raise ProtocolError(
                    ErrorCode.BAD_VERSION,
                    f"protocol version {request.version} is not supported; this server speaks 1",
                    fatal=True,
                )
            if self.state is State.HANDSHAKE:
                self.state = State.IDLE
        return request

    def _handle_upload(self, frame_type: FrameType, payload: bytes) -> Event:
        upload = self._upload
        assert upload is not None
        if frame_type is FrameType.DATA:
            upload.received += len(payload)
            limit = self.limits.max_file_size if upload.declared is None else upload.declared
            if upload.received > limit:
                what = "declared size" if upload.declared is not None else "max_file_size"
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"upload exceeds its {what} of {limit} bytes", fatal=True
                )
            if upload.hasher is not None:
                upload.hasher.update(payload)
            return Data(payload)
        if frame_type is FrameType.ABORT:
            control_object(frame_type, payload)
            self._finish_upload()
            return Abort()
        if frame_type is FrameType.END:
            digest = decode_digest(payload)
            self._finish_upload()
            if upload.declared is not None and upload.declared != upload.received:
                raise ProtocolError(
                    ErrorCode.SIZE_MISMATCH,
                    f"received {upload.received} bytes, PUT declared {upload.declared}",
                    fatal=False,
                )
            if upload.hasher is None:
                return UploadEnd(upload.received, digest.hex(), verified=False)
            actual = upload.hasher.hexdigest()
            if digest.hex() != actual:
                raise checksum_mismatch(digest.hex(), actual)
            return UploadEnd(upload.received, actual)
        raise AssertionError(f"{frame_type.name} passed the header check inside an upload")

    def _finish_upload(self) -> None:
        self.state = State.IDLE
        self._upload = None


__all__ = [
    "CLOSED",
    "FEATURES",
    "NEED_DATA",
    "Abort",
    "Data",
    "Limits",
    "ServerConnection",
    "State",
    "UploadEnd",
]
