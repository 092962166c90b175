"""Where upload bytes come from and download bytes go, one frame at a time.

:class:`Source` reads a ``put()`` source (a path, a bytes-like object, or a
binary stream) in frame-sized pieces; paths and bytes can be re-read from the
start for a retry, streams cannot once anything was read from them.

:class:`Sink` writes a download to a binary stream, or to a path atomically:
a temporary file in the same directory, fsync, ``os.replace``. The temporary
file is removed on any failure, so a path destination is either the complete,
verified file or untouched. Memory stays at one frame either way.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
from typing import IO, Any, Protocol, Union, cast

from .wire import Bytes

__all__ = ["PutSource", "Readable", "Sink", "Source", "Writable"]


class Readable(Protocol):
    """A binary stream ``put()`` can read from."""

    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    """A binary stream ``get()`` can write to."""

    def write(self, data: bytes, /) -> object: ...


# typing.Union and a quoted os.PathLike[str]: these aliases exist at run time,
# where ``X | Y`` needs Python 3.10 and ``os.PathLike[str]`` 3.9.
PathLike = Union[str, "os.PathLike[str]"]
PutSource = Union[PathLike, bytes, bytearray, memoryview, Readable]
GetDest = Union[PathLike, Writable]


class Source:
    """Frame-sized reads from a ``put()`` source."""

    def __init__(self, source: PutSource) -> None:
        self._path: PathLike | None = None
        self._buffer: memoryview | None = None
        self._stream: Readable | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buffer = memoryview(source).cast("B")
        elif isinstance(source, (str, os.PathLike)):
            self._path = source
        else:
            self._stream = source
        #: Where a seekable stream started: it can be read again from there.
        self._origin: int | None = _origin(source) if self._stream is not None else None
        self._file: IO[bytes] | None = None
        self._pos = 0
        #: Whether anything was read from a stream source (then it cannot be retried).
        self.consumed = False
        #: Attempts started (1 for the first), and (attempt, sha1 hex, size) of those
        #: that sent END: a retry can tell whether an earlier one may have committed.
        self.attempt = 0
        self.ended: list[tuple[int, str, int]] = []

    @property
    def rereadable(self) -> bool:
        """A path, bytes or a seekable stream: a retry can start again from the first byte."""
        return self._stream is None or self._origin is not None

    @property
    def name(self) -> str | None:
        """The file name of a path source."""
        return os.fspath(self._path) if self._path is not None else None

    def start(self) -> int | None:
        """(Re)start from the first byte; returns the size when it is known."""
        self.close()
        self._pos = 0
        self.attempt += 1
        if self._buffer is not None:
            return self._buffer.nbytes
        if self._path is not None:
            self._file = open(self._path, "rb")  # noqa: SIM115 - closed by close()
            st = os.fstat(self._file.fileno())
            return st.st_size if stat.S_ISREG(st.st_mode) else None
        if self._origin is not None:
            assert self._stream is not None
            self._stream.seek(self._origin)  # type: ignore[attr-defined]
        elif self.consumed:
            raise RuntimeError("a stream source cannot be read twice")
        return None

    def skip(self, count: int, sha1: Any) -> int:
        """Read ``count`` bytes into ``sha1`` without sending them; how many there were.

        A resumed upload (docs/protocol.md section 6.1) must END with the SHA-1
        of the whole file, so the bytes the server already holds are read
        again here, locally, one frame's worth at a time.
        """
        done = 0
        while done < count:
            piece = self.read(min(1 << 20, count - done))
            if not piece:
                break
            sha1.update(piece)
            done += len(piece)
        return done

    def read(self, size: int) -> Bytes:
        """Up to ``size`` bytes; empty at the end."""
        if self._buffer is not None:
            piece = self._buffer[self._pos : self._pos + size]
            self._pos += piece.nbytes
            return piece
        if self._file is not None:
            return self._file.read(size)
        assert self._stream is not None
        self.consumed = True
        data = self._stream.read(size)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("put() source stream must be binary (read() returned no bytes)")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _origin(stream: object) -> int | None:
    """The position of a stream that can seek back to it, else None."""
    seekable = getattr(stream, "seekable", None)
    try:
        if callable(seekable) and seekable():
            position = stream.tell()  # type: ignore[attr-defined]
            return position if isinstance(position, int) else None
    except (OSError, ValueError, AttributeError):
        return None
    return None


#: Streams that copy or write out what write() is given before it returns.
_LENT = (io.BytesIO, io.BufferedWriter, io.BufferedRandom, io.FileIO)


class Sink:
    """Download destination: a stream, or a path written atomically."""

    def __init__(self, dest: GetDest) -> None:
        self._path: str | None = None
        self._stream: Writable | None = None
        #: Whether a view of the receive buffer may be handed to the stream:
        #: the stdlib's own streams use it only during write(); anything else,
        #: a subclass of theirs included, might keep it: it gets bytes of its own.
        self._lends = False
        if isinstance(dest, (str, os.PathLike)):
            self._path = os.path.abspath(os.fspath(dest))
        else:
            self._stream = dest
            self._lends = type(dest) in _LENT
        self._tmp_name: str | None = None
        self._tmp: IO[bytes] | None = None
        #: Bytes written to the destination in the current attempt.
        self.written = 0
        #: Bytes ever written to a stream destination (a retry cannot undo them).
        self.stream_written = 0

    @property
    def restartable(self) -> bool:
        """A retry can start over: a path, or a stream nothing was written to yet."""
        return self._path is not None or self.stream_written == 0

    def check(self) -> None:
        """Before any request: a path's folder must exist, and the path must not be a folder.

        Otherwise the error would come from the temporary file and name it
        (``.scan.nii.x1y2.part``), not the folder the person has to create.
        """
        if self._path is None:
            return
        directory = os.path.dirname(self._path)
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, "output folder does not exist", directory)
        if os.path.isdir(self._path):
            raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", self._path)

    def start(self) -> None:
        """Begin an attempt (a fresh temporary file for a path)."""
        self.abort()
        self.written = 0
        if self._path is not None:
            directory, base = os.path.split(self._path)
            fd, self._tmp_name = tempfile.mkstemp(
                prefix=f".{base}.", suffix=".part", dir=directory or "."
            )
            self._tmp = os.fdopen(fd, "wb")

    def write(self, data: Bytes) -> None:
        """``data`` may be a view of the receive buffer, valid only during this call."""
        if self._tmp is not None:
            self._tmp.write(data)
        else:
            assert self._stream is not None
            if self._lends:
                cast(io.IOBase, self._stream).write(data)  # io streams take any buffer
            else:
                self._stream.write(bytes(data))
            self.stream_written += len(data)
        self.written += len(data)

    def commit(self) -> None:
        """Make the verified bytes visible: fsync and rename a path into place."""
        if self._tmp is None or self._tmp_name is None or self._path is None:
            flush = getattr(self._stream, "flush", None)
            if callable(flush):
                flush()
            return
        try:
            self._tmp.flush()
            os.fsync(self._tmp.fileno())
            self._tmp.close()
            os.replace(self._tmp_name, self._path)
        except BaseException:
            self.abort()
            raise
        self._tmp = None
        self._tmp_name = None
        fsync_dir(os.path.dirname(self._path))

    def abort(self) -> None:
        """Drop the current attempt: close and delete the temporary file."""
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.close()
            self._tmp = None
        if self._tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp_name)
            self._tmp_name = None


def fsync_dir(directory: str) -> None:
    """Persist the rename; not every platform or file system allows it."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
