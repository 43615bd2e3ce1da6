"""The webhook port's server and the untrusted-JSON reader both HTTP apps share.

`WebhookServer` is `http_loop`'s event-loop transport (framing, deadlines, connection cap,
`nosniff`, 500 instead of a stack trace, `TCP_NODELAY`, a listen backlog of 128) with what only
the TCP port needs: the `Host` check, a `Host` that is not the listen address or an allowed
name → 421 (DNS rebinding). `loads_json` refuses JSON nested too deep before the stdlib parser
can recurse on it.
"""

from __future__ import annotations

import json
import logging
import re
from array import array
from itertools import accumulate
from typing import Any

from bot_bottle.orchestrator.http_loop import LoopServer
from bot_bottle.orchestrator.http_transport import MAX_BODY, HttpApp

log = logging.getLogger(__name__)
MAX_JSON_DEPTH = 64
# beyond this many connections at once a client gets 503 (Gitea's own deliveries are few at a
# time; a flood must not exhaust the process's descriptors nor its memory)
MAX_CONNECTIONS = 256
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_NOT_SHAPE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_STRING = re.compile(rb'"[^"]*"')  # in a shape (no escapes left), a string
_SPLIT_MAX = 1 << 16


def loads_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for untrusted bodies: UTF-8 only, and nesting deeper than `max_depth` is
    refused before parsing (the stdlib parser recurses: 100k levels is a `RecursionError`).
    Every refusal is a `ValueError` whose message is fit for a 400's reason."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError("body is not valid JSON: not UTF-8") from exc
    # JSON cannot nest deeper than it has opening brackets (those in strings only add):
    # most bodies are cleared by two counts, without the full shape walk
    if body.count(b"{") + body.count(b"[") > max_depth and _depth(body) > max_depth:
        raise ValueError(f"body is JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError as exc:  # not expected after the check; never a stack trace
        raise ValueError(f"body is JSON nested deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc


def _depth(body: bytes) -> int:
    """How deep valid JSON `body` nests, all in C: escaped backslashes, then escaped quotes
    go (backslashes pair from the left, and only strings hold them), only brackets and
    quotes stay, strings go; the brackets left, as +1/-1, sum to the depth."""
    shape = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_SHAPE)
    if len(shape) <= _SPLIT_MAX:  # every other piece is outside the strings; fast, in C
        outside = b"".join(shape.split(b'"')[::2]).translate(_BRACKETS)
    else:  # a huge shape (a hostile body): no list of a million pieces
        outside = _STRING.sub(b"", shape).translate(_BRACKETS)
    return max(accumulate(array("b", outside))) if outside else 0


class WebhookServer(LoopServer):
    """The webhook port: `http_loop`'s one event-loop thread on a TCP listener, plus the
    `Host` check. `server_close()` waits up to `drain_timeout` seconds for answers promised."""

    logger = log

    def __init__(self, address: tuple[str, int], app: HttpApp, *, handler_timeout: float = 10.0,
                 drain_timeout: float = 5.0, allowed_hosts: tuple[str, ...] = (),
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.handler_timeout = handler_timeout
        self._extra_hosts = tuple(h.lower() for h in allowed_hosts)
        super().__init__(address, app, request_deadline=handler_timeout,
                         drain_timeout=drain_timeout, max_connections=max_connections,
                         max_body=MAX_BODY)
        # DNS rebinding: a page on evil.example whose name now resolves to us sends
        # `Host: evil.example`; only our own address (and the names the operator lists) pass
        host, port = self.server_address[:2]
        name = str(host).lower()
        names = {name}
        if name in _WILDCARD or name in _LOOPBACK:
            names = set(_LOOPBACK)
            if name not in _WILDCARD:
                names.add(name)
        self._own_hosts = frozenset(f"[{n}]:{port}" if ":" in n else f"{n}:{port}"
                                    for n in names)

    def host_allowed(self, host: str | None) -> bool:
        """The `Host` header names our listen address (host:port), or an `allowed_hosts`
        entry: `name` (any port) or `name:port`. Case does not matter; absent never passes."""
        host = (host or "").strip().lower()
        if not host:
            return False
        if host in self._own_hosts or host in self._extra_hosts:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in self._extra_hosts


_WILDCARD = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def make_server(host: str, port: int, app, *, handler_timeout: float = 10.0,
                allowed_hosts: tuple[str, ...] = ()) -> WebhookServer:
    """Bind (port 0 picks a free one; see `server.server_address`); call `serve_forever()`.
    Requests whose `Host` is neither the bound address nor in `allowed_hosts` get 421."""
    return WebhookServer((host, port), app, handler_timeout=handler_timeout,
                         allowed_hosts=allowed_hosts)
