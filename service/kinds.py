"""How a setting's text (a flag, a variable) or TOML value becomes a value.

Each :class:`Kind` parses text with one function and accepts a few TOML
types, so a value obeys the same rules whatever its source.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3}
_UNITS |= {"gib": 1024**3, "t": 1024**4, "tib": 1024**4}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``1048576``, ``1MiB``, ``64GiB``: plain bytes or a binary suffix."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 8MiB or 1048576)")
    return int(match.group(1)) * _UNITS[unit]


def format_size(size: int) -> str:
    """The shortest spelling :func:`parse_size` reads back: ``8MiB``, ``1536``."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


#: What a switch's environment twin may say, in any case; anything else is refused.
SWITCH_WORDS = {"1": True, "true": True, "yes": True, "on": True}
SWITCH_WORDS |= {"0": False, "false": False, "no": False, "off": False}


def parse_switch(text: str) -> bool:
    """``VALISE_LOG_KEYS=no`` must mean no: a word we do not know is an error, not "on"."""
    try:
        return SWITCH_WORDS[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"not a switch: {text!r} (use 1/0, true/false, yes/no or on/off)"
        ) from None


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def parse_seconds(text: str) -> float:
    """Seconds; ``nan`` and ``inf`` are refused (``nan`` passes every ``> 0`` check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text!r}")
    return value


def parse_text(text: str) -> str:
    """Empty is refused: ``VALISE_HOST=`` would listen on every interface."""
    if not text:
        raise argparse.ArgumentTypeError("empty (unset the variable to get the default)")
    return text


_TOML_TYPES = {str: "a string", int: "an integer", float: "a float", bool: "a boolean"}
_TOML_TYPES |= {dict: "a table", list: "an array"}


@dataclass(frozen=True, slots=True)
class Kind:
    """How one sort of setting is read from text (a flag, a variable) or from TOML."""

    metavar: str | None
    parse: Callable[[str], Any]
    #: The TOML types a file may use, and how to say so when it uses another.
    file_types: tuple[type, ...]
    expects: str

    def from_file(self, value: object) -> Any:
        """A TOML value of an accepted type, then the text parser: the same rules as a flag."""
        # bool is an int to isinstance, but `port = true` is not a port.
        if isinstance(value, self.file_types) and (
            not isinstance(value, bool) or bool in self.file_types
        ):
            return self.parse(str(value).lower() if isinstance(value, bool) else str(value))
        got = _TOML_TYPES.get(type(value), "a date or time")
        shown = f" {value!r}" if isinstance(value, str | int | float) else ""
        raise argparse.ArgumentTypeError(f"expected {self.expects}, not {got}{shown}")


SIZE = Kind("SIZE", parse_size, (int, str), 'bytes (an integer) or a string like "8MiB"')
INT = Kind("N", parse_int, (int,), "an integer")
SECONDS = Kind("SECONDS", parse_seconds, (int, float), "a number of seconds")
TEXT = Kind(None, parse_text, (str,), "a string")
SWITCH = Kind(None, parse_switch, (bool,), "true or false")
