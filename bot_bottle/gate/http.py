"""The little HTTP/1.x the gate speaks: reading a request or response head off a socket,
parsing and rebuilding it, and the gate's own short answers (403, 400, 502, ...).

Only heads are parsed; bodies are relayed as raw bytes (`pipe.py`), so chunked and streamed
responses pass through exactly as the server sends them. Every relayed exchange is one
request per connection: the gate sends `Connection: close` both ways, so each new request
comes on a new connection and is checked (and, for the provider's API, re-keyed) on its own.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
TOKEN_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# hop-by-hop headers never forwarded (the gate sets its own Connection: close);
# Transfer-Encoding is kept: the body is relayed raw, framing and all
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                        "proxy-authenticate", "te", "trailer", "upgrade"})


class HeadError(Exception):
    """A head that is too long, cut short or malformed."""


@dataclass
class Head:
    start: list[str]                      # request: method, target, version; response: version, status, reason
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def without(self, names) -> list[tuple[str, str]]:
        names = {n.lower() for n in names}
        listed = {t.strip().lower() for k, v in self.headers if k.lower() == "connection"
                  for t in v.split(",")}
        return [(k, v) for k, v in self.headers if k.lower() not in names | listed]


def read_head(sock: socket.socket, initial: bytes = b"") -> tuple[bytes, bytes]:
    """(head including its blank line, the bytes read past it)."""
    buf = bytearray(initial)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end != -1:
            return bytes(buf[:end + 4]), bytes(buf[end + 4:])
        if len(buf) > MAX_HEAD:
            raise HeadError("head over 64 KiB")
        data = sock.recv(65536)
        if not data:
            raise HeadError("connection closed before the end of the head")
        buf += data


def parse_head(raw: bytes, *, response: bool = False) -> Head:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) != 3 or not (parts[2 if not response else 0]).startswith(b"HTTP/1."):
        raise HeadError(f"malformed {'status' if response else 'request'} line")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN_RE.match(name):   # also refuses obsolete line folding
            raise HeadError("malformed header line")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise HeadError("malformed header value")
        headers.append((name.decode("ascii"), value.strip().decode("latin-1")))
    return Head([p.decode("latin-1") for p in parts], headers)


def build_head(start: list[str], headers: list[tuple[str, str]]) -> bytes:
    lines = [" ".join(start)] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(status: int, reason: str, body: str) -> bytes:
    """One of the gate's own responses: plain text, closing the connection."""
    data = (body.rstrip("\n") + "\n").encode("utf-8", "replace")
    head = build_head(["HTTP/1.1", str(status), reason],
                      [("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(data))), ("Connection", "close"),
                       ("X-Bot-Bottle-Gate", "egress")])
    return head + data


def closing_response(raw: bytes) -> bytes:
    """A response head with its hop-by-hop headers replaced by `Connection: close`."""
    head = parse_head(raw, response=True)
    return build_head(head.start, head.without(HOP_BY_HOP) + [("Connection", "close")])


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """`host[:port]` (or `[v6]:port`) as (host, port); ValueError when malformed."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest.removeprefix(":") if rest else ""
        host = "[" + host + "]"
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text:
        if default_port is None:
            raise ValueError("a port is required")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port {port_text!r}")
    if not host:
        raise ValueError("no host")
    return host, int(port_text)
