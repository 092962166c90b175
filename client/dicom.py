"""Is a DICOM file whole? Walk its data elements to the end, with the standard library only.

A scanner writes a slice as a DICOM Part 10 file: a 128-byte preamble,
``DICM``, the file meta information (group 0002, explicit VR little endian)
and the data set in the transfer syntax that group names. A file cut short
while it is written ends inside an element, inside a sequence, or before the
pixel data. :func:`check` reads the element headers (not the values: those
are skipped with ``seek``, so a 1 GB multi-frame costs a few reads) and says
why the file is not whole, or ``None`` when it is:

- every element's length must fit in the file, and the last one must end
  exactly at its end;
- every sequence and item of undefined length must be closed by its
  delimiter, and encapsulated pixel data by its sequence delimiter;
- a data set that describes an image (``Rows`` and ``Columns``, or an image
  SOP class in the file meta information) must carry pixel data, and
  uncompressed pixel data must hold rows x columns x samples x frames at the
  bits allocated;
- a deflated data set (1.2.840.10008.1.2.1.99) must be a complete deflate
  stream.

Supported transfer syntaxes: implicit VR little endian, explicit VR little
(every compressed syntax among them) and big endian, deflated explicit VR
little endian. The parse never raises for bad input: a file it cannot walk
is reported as not whole (docs/client.md, "When is a file complete?").
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import IO, Any

__all__ = ["MAGIC", "MAGIC_OFFSET", "check", "check_file", "is_dicom"]

MAGIC_OFFSET = 128
MAGIC = b"DICM"

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

#: VRs with a 2-byte reserved field and a 4-byte length in explicit VR.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQ_END = (0xFFFE, 0xE0DD)
_PIXEL_DATA = frozenset({(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)})
_TRANSFER_SYNTAX = (0x0002, 0x0010)
_MEDIA_SOP_CLASS = (0x0002, 0x0002)
#: Top-level elements whose values the image check needs.
_IMAGE_TAGS = {
    (0x0028, 0x0002): "samples",
    (0x0028, 0x0008): "frames",
    (0x0028, 0x0010): "rows",
    (0x0028, 0x0011): "columns",
    (0x0028, 0x0100): "bits",
}
#: Storage SOP classes whose instances always carry pixel data (CT, MR, PET,
#: NM, US, CR, DX, MG, XA, RF, SC, RT Image, their enhanced forms).
_IMAGE_CLASSES = frozenset(
    "1.2.840.10008.5.1.4.1.1." + suffix
    for suffix in [
        "1",
        "1.1",
        "1.1.1",
        "1.2",
        "1.2.1",
        "1.3",
        "1.3.1",
        "2",
        "2.1",
        "2.2",
        "3.1",
        "4",
        "4.1",
        "4.2",
        "4.3",
        "4.4",
        "6.1",
        "6.2",
        "7",
        "7.1",
        "7.2",
        "7.3",
        "7.4",
        "12.1",
        "12.1.1",
        "12.2",
        "12.2.1",
        "20",
        "128",
        "128.1",
        "130",
        "481.1",
    ]
)
#: Largest value read into memory (a UID, a count); everything else is skipped.
_SMALL = 1024


class Incomplete(Exception):
    """The file is not a whole DICOM file; the message says where it stops making sense."""


def is_dicom(head: bytes) -> bool:
    """Whether the first 132 bytes of a file are a DICOM Part 10 preamble and magic."""
    return head[MAGIC_OFFSET : MAGIC_OFFSET + 4] == MAGIC


class _Reader:
    """Bounded reads and skips over a seekable binary stream of a known size."""

    def __init__(self, fh: IO[bytes], size: int, pos: int = 0) -> None:
        self.fh = fh
        self.size = size
        self.pos = pos

    def read(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise Incomplete(f"ends at byte {self.size}, inside an element at {self.pos}")
        data = self.fh.read(n)
        if len(data) != n:
            raise Incomplete(f"ends at byte {self.pos + len(data)} while the file said {self.size}")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise Incomplete(
                f"an element at byte {self.pos} needs {n} bytes; the file ends at {self.size}"
            )
        self.fh.seek(n, io.SEEK_CUR)
        self.pos += n

    def peek(self, n: int) -> bytes:
        data = self.fh.read(n)
        self.fh.seek(-len(data), io.SEEK_CUR)
        return data

    @property
    def at_end(self) -> bool:
        return self.pos >= self.size


class _Walker:
    """Walks a data set in one transfer syntax; collects the top-level image attributes."""

    def __init__(self, reader: _Reader, *, explicit: bool, little: bool) -> None:
        self.r = reader
        self.explicit = explicit
        self.end = "<" if little else ">"
        self.found: dict[str, Any] = {}

    def _tag(self) -> tuple[int, int]:
        # Item and delimiter tags are little endian in little endian syntaxes only.
        group, element = struct.unpack(self.end + "HH", self.r.read(4))
        return group, element

    def _u32(self) -> int:
        value: int = struct.unpack(self.end + "I", self.r.read(4))[0]
        return value

    def header(self) -> tuple[tuple[int, int], bytes | None, int]:
        tag = self._tag()
        if tag[0] == 0xFFFE:  # item and delimiters: no VR in any syntax
            return tag, None, self._u32()
        if not self.explicit:
            return tag, None, self._u32()
        vr = self.r.read(2)
        if vr in _LONG_VRS:
            self.r.read(2)
            return tag, vr, self._u32()
        if not (vr.isalpha() and vr.isupper()):
            raise Incomplete(f"no VR where one belongs, at byte {self.r.pos - 2}")
        length: int = struct.unpack(self.end + "H", self.r.read(2))[0]
        return tag, vr, length

    def data_set(self, *, until: tuple[int, int] | None = None, top: bool = False) -> None:
        """Elements to the end of the file (``until`` None) or to the delimiter ``until``."""
        while True:
            if until is None and self.r.at_end:
                return
            tag, vr, length = self.header()
            if tag in (_ITEM_END, _SEQ_END):
                if tag == until:
                    return
                raise Incomplete(f"a delimiter out of place at byte {self.r.pos - 8}")
            if tag == _ITEM:
                raise Incomplete(f"an item outside a sequence at byte {self.r.pos - 8}")
            if top and tag in _PIXEL_DATA:
                self.found["pixel_length"] = None if length == _UNDEFINED else length
            if length == _UNDEFINED:
                if vr not in (None, b"SQ", b"UN", b"OB", b"OW"):
                    raise Incomplete(f"undefined length for VR {vr!r} at byte {self.r.pos}")
                self.items(implicit=vr == b"UN")
            elif top and tag in _IMAGE_TAGS and length <= _SMALL:
                self.found[_IMAGE_TAGS[tag]] = self._number(vr, self.r.read(length))
            else:
                self.r.skip(length)

    def items(self, *, implicit: bool = False) -> None:
        """A sequence (or encapsulated pixel data) of undefined length, to its delimiter."""
        inner = self
        if implicit and self.explicit:  # UN of undefined length holds implicit VR LE
            inner = _Walker(self.r, explicit=False, little=True)
        while True:
            tag, _, length = inner.header()
            if tag == _SEQ_END:
                return
            if tag != _ITEM:
                raise Incomplete(f"a sequence holds something other than items at {self.r.pos}")
            if length == _UNDEFINED:
                inner.data_set(until=_ITEM_END)
            else:
                self.r.skip(length)

    def _number(self, vr: bytes | None, value: bytes) -> int | None:
        try:
            if vr == b"IS" or (vr is None and len(value) not in (2, 4)):
                return int(value.strip(b" \0") or b"1")
            if len(value) == 2:
                number: int = struct.unpack(self.end + "H", value)[0]
                return number
            if len(value) == 4:
                number = struct.unpack(self.end + "I", value)[0]
                return number
        except ValueError:
            return None
        return None


def _meta(r: _Reader) -> dict[tuple[int, int], str]:
    """The file meta information (group 0002): its UIDs we need, by tag."""
    values: dict[tuple[int, int], str] = {}
    meta = _Walker(r, explicit=True, little=True)
    while not r.at_end and r.peek(2) == b"\x02\x00":
        tag, _, length = meta.header()
        if tag in (_TRANSFER_SYNTAX, _MEDIA_SOP_CLASS) and length <= _SMALL:
            values[tag] = r.read(length).rstrip(b"\0 ").decode("ascii", "replace")
        else:
            r.skip(length)
    if r.at_end:
        raise Incomplete("the file ends after its meta information")
    return values


def _image_problem(found: dict[str, Any], sop_class: str | None) -> str | None:
    describes_image = "rows" in found or "columns" in found or sop_class in _IMAGE_CLASSES
    if not describes_image:
        return None
    if "pixel_length" not in found:
        return "an image without its pixel data (the file stops before it)"
    length = found["pixel_length"]
    dims = [found.get(k) for k in ("rows", "columns", "bits", "samples", "frames")]
    known = [d for d in dims[:3] if isinstance(d, int) and d > 0]
    if length is None or len(known) < 3:
        return None  # compressed, or too little said to compute a size
    bits = 1
    for value in (*known, *(d if isinstance(d, int) and d > 0 else 1 for d in dims[3:])):
        bits *= value
    expected = (bits + 7) // 8
    if length < expected:
        return f"pixel data of {length} bytes where the image needs {expected}"
    return None


def check(fh: IO[bytes], size: int) -> str | None:
    """Why the DICOM file in ``fh`` (``size`` bytes) is not whole, or None.

    ``fh`` is positioned anywhere; a file without the ``DICM`` magic is not
    this module's business (None).
    """
    fh.seek(0)
    head = fh.read(MAGIC_OFFSET + 4)
    if not is_dicom(head):
        return None
    r = _Reader(fh, size, MAGIC_OFFSET + 4)
    try:
        meta = _meta(r)
        syntax = meta.get(_TRANSFER_SYNTAX, EXPLICIT_LE)
        if syntax == DEFLATED_LE:
            r = _inflate(fh, size - r.pos)
        explicit = syntax != IMPLICIT_LE
        walker = _Walker(r, explicit=explicit, little=syntax != EXPLICIT_BE)
        walker.data_set(top=True)
        return _image_problem(walker.found, meta.get(_MEDIA_SOP_CLASS))
    except Incomplete as exc:
        return str(exc)
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        return f"not a well-formed DICOM file ({exc})"


def _inflate(fh: IO[bytes], remaining: int) -> _Reader:
    """The deflated data set, inflated in memory; a stream cut short is :class:`Incomplete`."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    while remaining > 0:
        block = fh.read(min(remaining, 1 << 20))
        if not block:
            break
        remaining -= len(block)
        try:
            out.write(inflater.decompress(block))
        except zlib.error as exc:
            raise Incomplete(f"the deflated data set is damaged ({exc})") from None
    out.write(inflater.flush())
    if not inflater.eof:
        raise Incomplete("the deflated data set is cut short")
    out.seek(0)
    return _Reader(out, len(out.getvalue()))


def check_file(path: str) -> str | None:
    """:func:`check` for a path (an unreadable file raises ``OSError``)."""
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        return check(fh, size)
