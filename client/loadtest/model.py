"""What may be stored under each key, as far as the load test can know.

Concurrent PUTs and DELETEs on a shared pool of keys make "the" expected
value ill-defined; :class:`KeyState` keeps the set of states a correct
server may show instead, so a read that sees anything else is a real
corruption or anomaly, never a race of the test itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import ERRORS_BY_CODE, ValiseError
from .payload import Payload

if TYPE_CHECKING:  # a runtime ``X | None`` needs Python 3.10; client/ keeps to 3.8 syntax
    #: A state of a key: the SHA-1 (hex) of the stored version, or None when absent.
    Value = str | None

Outcome = Literal["done", "maybe", "refused"]


@dataclass(eq=False)
class Mutation:
    """A PUT (``payload``) or DELETE (``payload`` None) in flight on one key."""

    payload: Payload | None
    #: Another mutation of the key was in flight at some moment of this one.
    overlapped: bool = False

    def value(self) -> tuple[bool, Value]:
        """(whether this mutation can have taken effect yet, the state it leaves)."""
        if self.payload is None:
            return True, None
        return self.payload.digest is not None, self.payload.digest


@dataclass(eq=False)
class Window:
    """What a read (GET, STAT, LIST, DELETE's reply) may observe on one key."""

    settled: set[Value]
    seen: list[Mutation]

    def acceptable(self) -> set[Value]:
        out = set(self.settled)
        for mutation in self.seen:
            possible, value = mutation.value()
            if possible:
                out.add(value)
        return out


class KeyState:
    """The states a key may be in, as far as this tool can know.

    ``settled`` is every state the finished mutations may have left (one
    state, unless mutations overlapped or failed ambiguously). A window opened
    by a read collects each mutation in flight at any moment of the read.
    Over-approximations only: a correct server never trips a check.
    """

    __slots__ = ("inflight", "settled", "versions", "windows")

    def __init__(self) -> None:
        self.settled: set[Value] = {None}
        self.inflight: list[Mutation] = []
        self.windows: list[Window] = []
        self.versions = 0

    def maybe_present(self) -> bool:
        return self.settled != {None} or bool(self.inflight)

    def begin(self, payload: Payload | None) -> Mutation:
        mutation = Mutation(payload, overlapped=bool(self.inflight))
        for other in self.inflight:
            other.overlapped = True
        self.inflight.append(mutation)
        for window in self.windows:
            window.seen.append(mutation)
        return mutation

    def end(self, mutation: Mutation, outcome: Outcome) -> None:
        """``done``: the server said so; ``maybe``: it may or may not have applied it."""
        self.inflight.remove(mutation)
        possible, value = mutation.value()
        if outcome == "refused" or not possible:
            return
        if outcome == "done" and not mutation.overlapped:
            self.settled = {value}
        else:
            self.settled.add(value)

    def watch(self, exclude: Mutation | None = None) -> Window:
        window = Window(set(self.settled), [m for m in self.inflight if m is not exclude])
        self.windows.append(window)
        return window

    def unwatch(self, window: Window) -> None:
        self.windows.remove(window)


def ambiguous(exc: BaseException) -> bool:
    """Could the server have applied a mutation that failed with ``exc``?

    Non-fatal ERRORs (checksum or size mismatch, storage full or down) say
    nothing was stored. A fatal one, or a failure the client detected itself
    (dropped connection, timeout), leaves it open.
    """
    if isinstance(exc, ValiseError):
        return exc.fatal or exc.code not in ERRORS_BY_CODE
    return True


def show_values(values: set[Value]) -> str:
    return ", ".join(sorted(v or "absent" for v in values)) or "nothing"
