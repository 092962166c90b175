"""Unit tests for client/dicom.py: a whole DICOM file passes, any cut-short one does not."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import dicom
from tests.support import dicomfiles as df

WHOLE = {
    "implicit LE": df.slice_file(df.IMPLICIT_LE),
    "explicit LE": df.slice_file(df.EXPLICIT_LE),
    "explicit BE": df.slice_file(df.EXPLICIT_BE),
    "deflated": df.slice_file(df.DEFLATED_LE),
    "encapsulated": df.encapsulated_file(),
}


def check(data: bytes) -> str | None:
    return dicom.check(io.BytesIO(data), len(data))


def cuts(size: int) -> list[int]:
    """Every length in the headers, then every 7th byte, and the last few."""
    return sorted({*range(132, min(size, 700)), *range(700, size, 7), *range(size - 4, size)})


@pytest.mark.parametrize("name", WHOLE)
def test_whole_files_pass(name: str) -> None:
    assert check(WHOLE[name]) is None


@pytest.mark.parametrize("name", WHOLE)
def test_every_cut_short_file_fails(name: str) -> None:
    data = WHOLE[name]
    missed = [n for n in cuts(len(data)) if check(data[:n]) is None]
    assert missed == []


def test_a_cut_inside_pixel_data_says_how_much_is_missing() -> None:
    data = WHOLE["implicit LE"]
    why = check(data[: len(data) - 100])
    assert why is not None and f"the file ends at {len(data) - 100}" in why


def test_an_image_without_its_pixel_data_is_not_whole() -> None:
    data = WHOLE["explicit LE"]
    header = data[: data.index(b"\xe0\x7f\x10\x00")]  # cut exactly before (7FE0,0010)
    assert check(header) == "an image without its pixel data (the file stops before it)"


def test_short_native_pixel_data_is_not_whole() -> None:
    data = df.meta(df.EXPLICIT_LE) + b"".join(
        df.element(g, e, "US", v.to_bytes(2, "little"), explicit=True)
        for g, e, v in ((0x0028, 0x0010, 64), (0x0028, 0x0011, 64), (0x0028, 0x0100, 16))
    )
    data += df.element(0x7FE0, 0x0010, "OW", b"\0" * 100, explicit=True)
    assert check(data) == "pixel data of 100 bytes where the image needs 8192"


def test_files_without_the_magic_are_not_judged() -> None:
    assert check(b"") is None
    assert check(b"\x5c\x01\x00\x00" + b"\0" * 400) is None  # a NIfTI header


@given(st.binary(max_size=300))
def test_any_bytes_after_the_magic_give_a_verdict_never_an_exception(tail: bytes) -> None:
    for head in (df.meta(df.EXPLICIT_LE), df.meta(df.IMPLICIT_LE), df.meta(df.DEFLATED_LE)):
        verdict = check(head + tail)
        assert verdict is None or isinstance(verdict, str)


def nibabel_dicom() -> list[Path]:
    spec = importlib.util.find_spec("nibabel")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "nicom" / "tests" / "data").glob("*.dcm"))


def test_real_scanner_slices() -> None:
    files = {p.name: p.read_bytes() for p in nibabel_dicom()}
    if not files:
        pytest.skip("nibabel (requirements-dev.txt) is not installed: no real slices")
    # Real MR slices: whole, and the 100,000-byte prefix a paused writer left.
    assert check(files["0.dcm"]) is None
    why = check(files["0.dcm"][:100_000])
    assert why is not None and "needs 131072 bytes" in why
    # A header-only test file: Rows and Columns, no pixel data.
    assert check(files["csa_slice_norm.dcm"]) is not None
