"""Which handler a request goes to, and the key its path names (docs/http.md section 1).

A route is a path prefix and the methods it takes; the key is the rest of
the path, percent-decoded as UTF-8 (``/`` is part of the key; ``%2F`` is
the same ``/``). Keys are then checked by the one key rule every door
uses (docs/protocol.md section 3). The query string is for LIST only.

A new family of routes is a row of :data:`ROUTES` and a handler in the
door's dispatch table. The tus uploads of ``/v1/uploads/`` are three rows;
their "key" is the upload id.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from protocol.errors import ErrorCode
from protocol.requests import check_key
from service.http.errors import HttpError


@dataclass(frozen=True, slots=True)
class Route:
    #: The handler's name in the dispatch table.
    name: str
    #: The path the route answers; with ``keyed``, a prefix the key follows.
    path: str
    methods: frozenset[str]
    keyed: bool = True


@dataclass(frozen=True, slots=True)
class Target:
    """A request routed: which handler, which key (if any), which query parameters."""

    name: str
    method: str
    key: str | None = None
    query: dict[str, str] = field(default_factory=dict)


def _route(name: str, path: str, *methods: str, keyed: bool = True) -> Route:
    return Route(name, path, frozenset(methods), keyed)


#: Exact paths first, then prefixes, longest first.
ROUTES = (
    _route("list", "/v1/files", "GET", "HEAD", keyed=False),
    _route("list", "/v1/files/", "GET", "HEAD", keyed=False),
    _route("files", "/v1/files/", "GET", "HEAD", "PUT", "DELETE"),
    _route("upload", "/upload/", "POST"),
    _route("download", "/download/", "GET", "HEAD"),
    _route("tus", "/v1/uploads", "OPTIONS", "POST", keyed=False),
    _route("tus", "/v1/uploads/", "OPTIONS", "POST", keyed=False),
    _route("tus", "/v1/uploads/", "OPTIONS", "HEAD", "PATCH", "DELETE"),
)


def route(method: str, target: str) -> Target:
    """The handler for ``method target``; 404 for an unknown path, 405 for a method."""
    path, _, query = _origin(target).partition("?")
    for r in ROUTES:
        if r.keyed and path.startswith(r.path) and len(path) > len(r.path):
            if method not in r.methods:
                raise _not_allowed(r)
            return Target(r.name, method, key=_key(path[len(r.path) :]))
        if not r.keyed and path == r.path:
            if method not in r.methods:
                raise _not_allowed(r)
            return Target(r.name, method, query=_query(query))
    raise HttpError(404, ErrorCode.NOT_FOUND, "no such route")


def _origin(target: str) -> str:
    """The path and query of an origin-form or absolute-form request target."""
    if target.startswith("/"):
        return target.split("#", 1)[0]
    if target.lower().startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(target)
        return parts.path + ("?" + parts.query if parts.query else "")
    raise HttpError(400, ErrorCode.BAD_REQUEST, "request target must be a path")


def _key(raw: str) -> str:
    try:
        key = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, ErrorCode.BAD_KEY, "key is not valid UTF-8") from None
    check_key(key, fatal=False)
    return key


def _query(query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, ErrorCode.BAD_REQUEST, "query string is not valid UTF-8") from None
    return dict(pairs)


def _not_allowed(r: Route) -> HttpError:
    allow = ", ".join(sorted(r.methods))
    return HttpError(
        405,
        ErrorCode.BAD_REQUEST,
        f"method not allowed here; allowed: {allow}",
        headers=(("Allow", allow),),
    )
