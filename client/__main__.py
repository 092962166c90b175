"""``python -m client``: see :mod:`client.cli`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
