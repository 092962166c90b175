"""Compact JSON for the server's hot paths: orjson's speed, the stdlib's bytes.

Every small PUT+GET pair decodes two requests and a stored info and encodes
replies, an info and an event; with the stdlib that was an eighth of the
server's CPU per pair (issue 21). orjson does the same in C several times
faster, but it is not json.dumps/json.loads with other clothes on, so each
function here takes orjson's answer only where it is the stdlib's, and
otherwise hands the input to the stdlib call it replaces:

- orjson refuses what the stdlib takes (lone surrogates, integers over 64
  bits, NaN, ``int`` dict keys; str/int subclasses, dataclasses and
  datetimes by option): the stdlib then runs, and succeeds or fails exactly
  as it did. orjson also writes plain ``enum.Enum`` members and ``uuid.UUID``,
  which the stdlib refuses: no caller passes them (our enums are StrEnums,
  which orjson hands back as a subclass);
- orjson reads an integer literal past 64 bits as a float where the stdlib
  keeps the int: a text with 19 digits in a row goes to the stdlib;
- floats: both write the shortest repr, identical from 1e-4 to 1e16 (epoch
  seconds, what file info carries), but not below 1e-4 (``1e-05`` against
  ``0.00001``) nor NaN/Infinity (``null``). Callers pass no such floats.

client/ does not use this: it is stdlib only (protocol.export copies
constants, not code).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: Types orjson would write where json.dumps raises: sent on to the stdlib.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_PASSTHROUGH |= orjson.OPT_PASSTHROUGH_SUBCLASS

#: An integer literal orjson may read as a float (2**63 has 19 digits).
_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_BYTES = re.compile(rb"[0-9]{19}")


def dumps(obj: Any) -> bytes:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()``:
    UnicodeEncodeError for a lone surrogate, as that raises."""
    try:
        return orjson.dumps(obj, option=_PASSTHROUGH)
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_str(obj: Any) -> str:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False)``."""
    try:
        return orjson.dumps(obj, option=_PASSTHROUGH).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``: the same value, or the same error."""
    if isinstance(text, str):
        long_digits = _LONG_DIGITS.search(text) is not None
    else:
        long_digits = _LONG_DIGITS_BYTES.search(text) is not None
    if not long_digits:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)
