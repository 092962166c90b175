"""``python -m client``: see :mod:`client.cli`.

Python 3.6-parsable on purpose (no ``from __future__ import annotations``):
the package's ``__init__`` has already refused an older Python by then.
"""

from .cli import main

raise SystemExit(main())
