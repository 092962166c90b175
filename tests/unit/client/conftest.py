"""Fixtures shared by the client unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client import wire


@pytest.fixture
def small_buffers() -> Iterator[None]:
    """Tiny buffer sizes, so a few hundred bytes of frames compact and grow the buffer."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(wire, "_MIN_BUFFER", 16)
        mp.setattr(wire, "_MIN_FREE", 8)
        mp.setattr(wire, "_MAX_SLACK", 96)
        yield
