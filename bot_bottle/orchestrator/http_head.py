"""A request's head (request line and header fields) read from a buffered socket file, by hand:
the transport's one parser, in place of `http.client`'s and `email`'s (a quarter of the ack
path's time went to them).

It keeps their limits and answers: a line over `MAX_LINE` bytes → 414 for the request line,
431 for a header; more than `MAX_HEADERS` header fields → 431; a malformed request line or
version → 400, HTTP/2 or later → 505; a method no route serves → 501. Stricter than they were:
a header line without a name, with space before its colon or folded onto the next line → 400,
and a `Content-Length` or `Host` repeated with another value → 400 (two framings of one
body, two origins).
Names are kept lower-case; of a repeated field the first value counts, as `Message.get` gave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 65536  # http.client's _MAXLINE
MAX_HEADERS = 100  # http.client's _MAXHEADERS
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/([0-9]+)\.([0-9]+)")
_SINGLE = ("content-length", "host")  # a second one is refused, not silently dropped


class HeadError(Exception):
    """The head cannot be served: answer `status` with `reason`, then close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Headers(dict):
    """Header fields by lower-case name; lookups ignore case (`headers.get("Content-Type")`)."""

    def get(self, name: str, default=None):
        return dict.get(self, name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: tuple[int, int]
    headers: Headers

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told `close`; 1.0 only when told `keep-alive`."""
        tokens = {t.strip() for t in self.headers.get("connection", "").lower().split(",")}
        if "close" in tokens:
            return False
        return self.version >= (1, 1) or "keep-alive" in tokens

    @property
    def expects_continue(self) -> bool:
        return (self.version >= (1, 1)
                and self.headers.get("expect", "").strip().lower() == "100-continue")


def read_head(rfile) -> Head | None:
    """The next request's head from `rfile` (its `readline(limit)`); None when the peer closed
    (or sent an empty line) before a request. `HeadError` for a head that is refused;
    `TimeoutError`/`OSError` from the socket pass through."""
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise HeadError(414, "request line too long")
    text = line.decode("iso-8859-1").rstrip("\r\n")
    if not text:
        return None
    words = text.split()
    if len(words) != 3:
        raise HeadError(400, "bad request line")
    method, target, version = words
    match = _VERSION.fullmatch(version)
    if match is None:
        raise HeadError(400, "bad request version")
    numbers = (int(match.group(1)), int(match.group(2)))
    if numbers >= (2, 0):
        raise HeadError(505, "HTTP version not supported")
    if numbers < (1, 0):
        raise HeadError(400, "bad request version")
    headers = _read_fields(rfile)
    if method not in METHODS:
        raise HeadError(501, f"method {method[:16]!r} not supported")
    if target.startswith("//"):  # as http.server: never read as a scheme-relative URL
        target = "/" + target.lstrip("/")
    return Head(method, target, numbers, headers)


def _read_fields(rfile) -> Headers:
    headers = Headers()
    count = 0
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HeadError(431, "header line too long")
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ConnectionError("the peer closed the connection inside a request's head")
        count += 1
        if count > MAX_HEADERS:
            raise HeadError(431, f"more than {MAX_HEADERS} headers")
        text = line.decode("iso-8859-1")
        name, sep, value = text.partition(":")
        if not sep or _TOKEN.fullmatch(name) is None:  # folded, nameless or "Name :"
            raise HeadError(400, "bad header line")
        name = name.lower()
        value = value.strip(" \t\r\n")
        if dict.__contains__(headers, name):  # already lower-case: skip the fold
            if name in _SINGLE and dict.__getitem__(headers, name) != value:
                raise HeadError(400, f"more than one {name} header")
            continue
        dict.__setitem__(headers, name, value)
