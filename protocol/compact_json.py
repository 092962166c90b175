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
  keeps the int; integers within 64 bits it reads as ints, and every float
  literal to the same float. So a value holding a float of magnitude 2**63
  or more, where such a literal may have gone, is read again by the stdlib
  (a scan of the text for 19 digits in a row cost 4 x the parse itself);
- floats: both write the shortest repr, identical from 1e-4 to 1e16 (epoch
  seconds, what file info carries), but not below 1e-4 (``1e-05`` against
  ``0.00001``) nor NaN/Infinity (``null``). Callers pass no such floats.

client/ does not use this: it is stdlib only (protocol.export copies
constants, not code).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Types orjson would write where json.dumps raises: sent on to the stdlib.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_PASSTHROUGH |= orjson.OPT_PASSTHROUGH_SUBCLASS

#: orjson reads integer literals beyond 64 bits as floats no smaller than this.
_WIDE = float(2**63)


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
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if _wide(obj):
        return json.loads(text)
    return obj


def _wide(obj: Any) -> bool:
    """A float orjson may have read from an integer literal (no recursion: orjson
    reads deeper nesting than Python's recursion limit)."""
    stack = [obj]
    while stack:
        node = stack.pop()
        kind = type(node)
        values = node.values() if kind is dict else node if kind is list else (node,)
        for value in values:
            kind = type(value)
            if kind is float:
                if not -_WIDE < value < _WIDE:
                    return True
            elif kind is dict or kind is list:
                stack.append(value)
    return False
