"""``python -m service.keys new [KEY_ID]``: a new line for --encryption-key-file.

Prints ``<key-id> <base64 of 32 random bytes>``; the key id defaults to k and
the UTC time. Write it where only the server's user can read it (umask 077;
docs/security.md has the rotation procedure).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from storage.keyfile import new_line

USAGE = "usage: python -m service.keys new [KEY_ID]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "new" or len(args) > 2:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        print(new_line(args[1] if len(args) == 2 else None))
    except ValueError as exc:
        print(f"service.keys: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
