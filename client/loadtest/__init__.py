"""Load test: ``python -m client.loadtest [--spawn] [--clients N] [--duration S] ...``.

N asyncio clients (one :class:`~client.aio.AsyncClient` each) run a weighted
mix of PUT, GET, STAT, LIST and DELETE on a shared pool of keys under a unique
prefix, for a duration and/or a number of operations, then delete every key
they created.

Every byte is checked without being kept. A PUT streams a :class:`Payload`:
bytes that are a pure function of (seed, key, version), hashed as they are
handed out, so memory stays at one frame per client. A GET streams into a
:class:`HashSink`. The digest is checked against what the tool may have stored
for that key (:class:`KeyState`): the version at rest when the GET started, or
one whose PUT (or DELETE) by this tool was in flight at some moment of the
GET. Anything else is a corruption, printed loudly; STAT, LIST and DELETE
replies are checked the same way (a mismatch there is an anomaly). Both make
the exit code 1, as does any error from the server or the connection.

Exit codes: 0 clean, 1 corruption, anomaly or error, 2 usage, 130 interrupted.

Like the rest of client/, it runs on Python 3.8+ against any server;
``--spawn`` starts ``server.py`` with the same interpreter, so it needs 3.11
and says so, as a usage error, on an older one.

One job per module: :mod:`.settings` (option values), :mod:`.payload`
(generated and hashed bytes), :mod:`.model` (what each key may hold),
:mod:`.stats`, :mod:`.workload` (the run), :mod:`.report`, :mod:`.spawn`
(``--spawn``'s server) and :mod:`.cli`.
"""

from __future__ import annotations

from .cli import main
from .model import KeyState
from .payload import HashSink, Payload
from .settings import parse_mix, parse_sizes
from .workload import LoadTest

__all__ = ["HashSink", "KeyState", "LoadTest", "Payload", "main", "parse_mix", "parse_sizes"]
