"""The HTTP/1.1 door (docs/http.md): the same store as the binary door, spoken over h11.

:class:`HttpConnection` serves one client connection; the rest is its
private machinery: routes, the error table, header parsing, the handlers.
"""

from __future__ import annotations

from service.http.connection import HttpConnection

__all__ = ["HttpConnection"]
