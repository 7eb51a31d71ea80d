"""The request target of an HTTP/1.1 request line (RFC 9112 section 3.2), as the worker
(server/connection.py) routes it: origin-form (`/path?query`) and absolute-form
(`http://host/path?query`, routed by its path) go to the app; `OPTIONS *` is answered by the worker;
anything else gets a JSON error, never a traceback."""

from __future__ import annotations

import httptools

# What the app serves (a route may allow fewer: the app's own 405 says which).
ALLOWED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")
ASTERISK = b"*"  # OPTIONS *: the server as a whole


class BadTarget(Exception):
    """A request line the worker answers itself: status, message and headers of its answer."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def parse_target(method: bytes, url: bytes) -> tuple[bytes, bytes]:
    """(path, query) of a request target, both still percent-encoded, or BadTarget."""
    if method == b"CONNECT":
        # 405, as nginx answers: the method is known, this server (no proxy) serves it for nothing.
        raise BadTarget(405, "CONNECT is not served here: this server is no proxy",
                        {"Allow": ", ".join(ALLOWED_METHODS)})
    if url == ASTERISK:
        if method == b"OPTIONS":
            return ASTERISK, b""
        raise BadTarget(400, "the request target * is for OPTIONS only")
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        raise BadTarget(400, f"the request target is not a valid URL: {_shown(url)}") from None
    if parsed.schema is not None and parsed.schema.lower() not in (b"http", b"https"):
        raise BadTarget(400, f"the request target is not an http URL: {_shown(url)}")
    if parsed.schema is None and not url.startswith(b"/"):
        raise BadTarget(400, f"the request target is neither a path nor an http URL: {_shown(url)}")
    return parsed.path or b"/", parsed.query or b""


def logged_path(url: bytes) -> str | None:
    """The path for an access line of a request refused early (its target maybe cut off or invalid)."""
    try:
        return parse_target(b"GET", url)[0].decode("latin-1") if url else None
    except BadTarget:
        return None


def _shown(url: bytes) -> str:
    return repr(url[:100].decode("latin-1"))
