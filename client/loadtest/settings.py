"""What a run is asked to do: flag values parsed into :class:`Settings`.

Sizes, the operation mix and the exit codes live here so the command line,
the run and the report agree on them; a bad value is a :class:`UsageError`
(exit 2) wherever it is found.
"""

from __future__ import annotations

import math
import re
import ssl
from dataclasses import dataclass

OPS = ("put", "get", "stat", "list", "delete")
DEFAULT_MIX = "put=4,get=4,stat=1,list=1,delete=1"
DEFAULT_SIZES = "4KiB:70,1MiB:25,64MiB:5"
DEFAULT_DURATION = 30.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2}
_UNITS.update({"mb": 1000**2, "g": 1024**3, "gib": 1024**3, "gb": 1000**3})
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


class UsageError(Exception):
    """A bad option value (exit 2)."""


def parse_size(text: str) -> int:
    """``4096``, ``4KiB``, ``1MiB``, ``2GB``."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise UsageError(f"not a size: {text!r} (try 4KiB, 1MiB or 4096)")
    return int(match.group(1)) * _UNITS[unit]


@dataclass(frozen=True)
class SizeChoice:
    low: int
    high: int
    weight: float


def parse_sizes(spec: str) -> list[SizeChoice]:
    """``4KiB:70,1MiB:25,64MiB:5``: size:weight; a size may be a range ``1KiB-2MiB``."""
    choices = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        size, sep, weight = item.rpartition(":")
        if not sep:
            size, weight = item, "1"
        low_s, dash, high_s = size.partition("-")
        low = parse_size(low_s)
        high = parse_size(high_s) if dash else low
        try:
            w = float(weight)
        except ValueError:
            raise UsageError(f"bad weight in --sizes item {item!r}") from None
        if high < low or not math.isfinite(w) or w < 0:
            raise UsageError(f"bad --sizes item {item!r}")
        choices.append(SizeChoice(low, high, w))
    if not choices or sum(c.weight for c in choices) <= 0:
        raise UsageError(f"--sizes needs at least one size with a weight > 0: {spec!r}")
    return choices


def parse_mix(spec: str) -> dict[str, float]:
    """``put=4,get=4,stat=1``: weight per operation; operations left out get 0."""
    mix = dict.fromkeys(OPS, 0.0)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition("=")
        name = name.strip().lower()
        if name not in mix:
            raise UsageError(f"unknown operation {name!r} in --mix (known: {', '.join(OPS)})")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise UsageError(f"bad weight in --mix item {item!r}") from None
        if not math.isfinite(mix[name]) or mix[name] < 0:
            raise UsageError(f"bad weight in --mix item {item!r}")
    if sum(mix.values()) <= 0:
        raise UsageError(f"--mix needs an operation with a weight > 0: {spec!r}")
    return mix


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    clients: int
    duration: float | None
    count: int | None
    sizes: list[SizeChoice]
    sizes_spec: str
    mix: dict[str, float]
    prefix: str
    keys: int
    seed: int
    timeout: float
    retries: int
    progress: bool
    quiet: bool
    #: HELLO's token (--token, VALISE_TOKEN); never printed or reported.
    token: str | None = None
    #: From --tls, --tls-ca, --tls-cert, --tls-key (client.tls.context); None: plain TCP.
    ssl: ssl.SSLContext | None = None
