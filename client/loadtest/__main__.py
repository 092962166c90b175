"""``python -m client.loadtest``: see :mod:`client.loadtest`."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
