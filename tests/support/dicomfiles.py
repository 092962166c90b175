"""Small DICOM Part 10 files built by hand, for the completeness checks of ``watch``.

Each builder returns the bytes of a whole file in one transfer syntax; the
tests cut them short to make the half-written files a scanner leaves while
it pauses. Values are made up (no real patient): only the structure matters.
"""

from __future__ import annotations

import struct
import zlib

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def _even(value: bytes, pad: bytes = b" ") -> bytes:
    return value + pad if len(value) % 2 else value


def element(
    group: int, elem: int, vr: str, value: bytes, *, explicit: bool, end: str = "<"
) -> bytes:
    """One data element; ``value`` of length UNDEFINED is written by the caller after it."""
    tag = struct.pack(end + "HH", group, elem)
    if not explicit:
        return tag + struct.pack(end + "I", len(value)) + value
    if vr in LONG_VRS:
        return tag + vr.encode() + b"\0\0" + struct.pack(end + "I", len(value)) + value
    return tag + vr.encode() + struct.pack(end + "H", len(value)) + value


def undefined(group: int, elem: int, vr: str, *, explicit: bool, end: str = "<") -> bytes:
    """The header of an element of undefined length (a sequence, encapsulated pixels)."""
    tag = struct.pack(end + "HH", group, elem)
    if not explicit:
        return tag + struct.pack(end + "I", UNDEFINED)
    return tag + vr.encode() + b"\0\0" + struct.pack(end + "I", UNDEFINED)


def item(body: bytes, *, end: str = "<", defined: bool = True) -> bytes:
    head = struct.pack(end + "HH", 0xFFFE, 0xE000)
    if defined:
        return head + struct.pack(end + "I", len(body)) + body
    close = struct.pack(end + "HHI", 0xFFFE, 0xE00D, 0)
    return head + struct.pack(end + "I", UNDEFINED) + body + close


def sequence_end(end: str = "<") -> bytes:
    return struct.pack(end + "HHI", 0xFFFE, 0xE0DD, 0)


def meta(syntax: str, sop_class: str = CT_IMAGE) -> bytes:
    """Preamble, magic and group 0002 (always explicit VR little endian)."""
    body = b"".join(
        [
            element(0x0002, 0x0001, "OB", b"\0\1", explicit=True),
            element(0x0002, 0x0002, "UI", _even(sop_class.encode(), b"\0"), explicit=True),
            element(0x0002, 0x0003, "UI", _even(b"1.2.3.4.5.6", b"\0"), explicit=True),
            element(0x0002, 0x0010, "UI", _even(syntax.encode(), b"\0"), explicit=True),
        ]
    )
    length = element(0x0002, 0x0000, "UL", struct.pack("<I", len(body)), explicit=True)
    return b"\0" * 128 + b"DICM" + length + body


def slice_file(
    syntax: str = IMPLICIT_LE, *, rows: int = 64, columns: int = 64, sop_class: str = CT_IMAGE
) -> bytes:
    """A 16-bit single-frame image with a nested sequence, in ``syntax``."""
    explicit = syntax != IMPLICIT_LE
    end = ">" if syntax == EXPLICIT_BE else "<"

    def el(group: int, elem: int, vr: str, value: bytes) -> bytes:
        return element(group, elem, vr, value, explicit=explicit, end=end)

    nested = el(0x0008, 0x0100, "SH", b"T-A0100 ") + el(0x0008, 0x0104, "LO", b"Brain ")
    pixels = bytes((i * 7) % 251 for i in range(rows * columns * 2))
    data = b"".join(
        [
            el(0x0008, 0x0016, "UI", _even(sop_class.encode(), b"\0")),
            el(0x0008, 0x0060, "CS", b"CT"),
            el(0x0010, 0x0010, "PN", b"Test^Phantom "),
            undefined(0x0008, 0x2218, "SQ", explicit=explicit, end=end),
            item(nested, end=end, defined=False),
            item(nested, end=end),
            sequence_end(end),
            el(0x0028, 0x0002, "US", struct.pack(end + "H", 1)),
            el(0x0028, 0x0010, "US", struct.pack(end + "H", rows)),
            el(0x0028, 0x0011, "US", struct.pack(end + "H", columns)),
            el(0x0028, 0x0100, "US", struct.pack(end + "H", 16)),
            el(0x7FE0, 0x0010, "OW", pixels),
        ]
    )
    if syntax == DEFLATED_LE:
        squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = squeeze.compress(data) + squeeze.flush()
    return meta(syntax, sop_class) + data


def encapsulated_file() -> bytes:
    """JPEG Lossless syntax: pixel data as an offset table and two fragments."""

    def el(group: int, elem: int, vr: str, value: bytes) -> bytes:
        return element(group, elem, vr, value, explicit=True)

    data = b"".join(
        [
            el(0x0008, 0x0016, "UI", _even(CT_IMAGE.encode(), b"\0")),
            el(0x0028, 0x0010, "US", struct.pack("<H", 64)),
            el(0x0028, 0x0011, "US", struct.pack("<H", 64)),
            el(0x0028, 0x0100, "US", struct.pack("<H", 16)),
            undefined(0x7FE0, 0x0010, "OB", explicit=True),
            item(b""),
            item(b"\xff\xd8" + b"\x11" * 998),
            item(b"\x22" * 500 + b"\xff\xd9"),
            sequence_end(),
        ]
    )
    return meta(JPEG_LOSSLESS) + data
