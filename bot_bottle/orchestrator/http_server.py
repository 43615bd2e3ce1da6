"""The orchestrator's HTTP transport: a tuned `ThreadingHTTPServer` that frames requests and
hands them to an app with `handle(method, path, headers, body) -> Response`.

It owns only transport decisions: HTTP/1.1 keep-alive, `TCP_NODELAY`, a listen backlog of
128, daemon handler threads, a per-connection timeout (slow clients are dropped), and the
body framing rules: POST without `Content-Length` → 411, an invalid one → 400, one over
1 MiB → 413 without reading the body (and the connection is closed); a `Host` that is not
the listen address or an allowed name → 421 (DNS rebinding). Every answer says `nosniff`.
The request head and the body each have one overall deadline, so a client trickling bytes
cannot hold a thread.
No exception reaches the stdlib: anything unexpected is logged and answered 500 (JSON).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import socketserver
import sys
import threading
import time
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from typing import Any

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
_BODY_METHODS = ("POST", "PUT", "PATCH")
MAX_JSON_DEPTH = 64
# a JSON string (escapes included); in valid UTF-8 a 0x22 byte is always a real quote
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def loads_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for untrusted bodies: UTF-8 only, and nesting deeper than `max_depth` is
    refused before parsing (the stdlib parser recurses: 100k levels is a `RecursionError`).
    Every refusal is a `ValueError` whose message is fit for a 400's reason."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError("body is not valid JSON: not UTF-8") from exc
    # strings removed, brackets kept as +1/-1: the running sum is the depth, summed in C
    shape = _JSON_STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    if shape and max(accumulate(array("b", shape))) > max_depth:
        raise ValueError(f"body is JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError as exc:  # not expected after the check; never a stack trace
        raise ValueError(f"body is JSON nested deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from exc


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bot-bottle"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.handler_timeout  # StreamRequestHandler applies it
        super().setup()

    def handle_one_request(self) -> None:
        self.server.arm(self.connection)  # request line and headers must arrive in time
        try:
            super().handle_one_request()
        finally:
            self.server.disarm(self.connection)

    def log_request(self, code="-", size="-") -> None:  # we log our own access line
        pass

    def log_message(self, format: str, *args) -> None:
        log.debug("http %s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        started = time.monotonic()
        self.server.disarm(self.connection)  # headers are in; the body has its own deadline
        try:
            status, content_type, body, extra = self._answer()
        except TimeoutError:
            self.close_connection = True
            status, content_type, body, extra = _error(408, "request body too slow")
        except ConnectionError as exc:  # the client hung up mid-body: no one to answer
            log.debug("http %s %s: client went away: %s", self.command, self.path, exc)
            self.close_connection = True
            return
        except Exception:
            log.exception("http %s %s: handler failed", self.command, self.path)
            self.close_connection = True
            status, content_type, body, extra = _error(500, "internal error")
        # observed before the answer is written, so a client that has it sees it counted
        self.server.observe(self.command, self.path, status, time.monotonic() - started)
        try:
            self.send_response(status)
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as exc:  # the client went away; nothing left to tell it
            log.debug("http %s %s: write failed: %s", self.command, self.path, exc)
            self.close_connection = True
        # success is logged by the app (one line per delivery); the access line is for debugging
        log.log(logging.DEBUG if status < 400 else logging.INFO, "http %s %s %d %dB %.1fms",
                self.command, self.path, status, len(body), (time.monotonic() - started) * 1000)

    def _answer(self) -> tuple[int, str, bytes, tuple]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return _error(411, "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command in _BODY_METHODS:
                self.close_connection = True
                return _error(411, "Content-Length required")
            length = 0
        else:
            raw = raw.strip()
            if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
                self.close_connection = True
                return _error(400, "invalid Content-Length")
            length = int(raw)
        if length > MAX_BODY:
            self.close_connection = True  # the unread body makes the stream unusable
            return _error(413, "body over 1 MiB")
        host = self.headers.get("Host")
        if not self.server.host_allowed(host):
            self.close_connection = True  # the body is not read
            log.warning("http %s %s refused: Host %s is not this service's", self.command,
                        self.path.split("?", 1)[0][:80], _printable(host or "(none)"))
            return _error(421, "Host names no address this service answers on "
                               "(see FORGE_ALLOWED_HOSTS)")
        body = self._read_body(length)
        if body is None:
            self.close_connection = True
            return _error(400, "body shorter than Content-Length")
        method = "GET" if self.command == "HEAD" else self.command
        response = self.server.app.handle(method, self.path, self.headers, body)
        return response.status, response.content_type, response.body, response.headers

    def _read_body(self, length: int) -> bytes | None:
        """Read exactly `length` bytes within one overall deadline; None on early EOF."""
        deadline = time.monotonic() + self.server.handler_timeout
        chunks, remaining = [], length
        try:
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("body read deadline passed")
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(remaining, 65536))
                if not chunk:
                    return None
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            self.connection.settimeout(self.server.handler_timeout)
        return b"".join(chunks)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve


def _error(status: int, reason: str) -> tuple[int, str, bytes, tuple]:
    body = json.dumps({"status": "error", "reason": reason}).encode()
    return status, "application/json", body, ()


class WebhookServer(ThreadingHTTPServer):
    """A `ThreadingHTTPServer` tuned for bursts of deliveries. `server_close()` waits up to
    `drain_timeout` seconds for in-flight handler threads."""

    daemon_threads = True
    block_on_close = False  # we track and join our own threads, with a bound
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app, *, handler_timeout: float = 10.0,
                 drain_timeout: float = 5.0, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.app = app
        self._extra_hosts = tuple(h.lower() for h in allowed_hosts)
        self.handler_timeout = handler_timeout
        self.drain_timeout = drain_timeout
        self._workers: set[threading.Thread] = set()
        self._workers_lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._closing = False
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's slow getfqdn()
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        # DNS rebinding: a page on evil.example whose name now resolves to us sends
        # `Host: evil.example`; only our own address (and the names the operator lists) pass
        name = str(host).lower()
        names = {name}
        if name in _WILDCARD or name in _LOOPBACK:
            names = set(_LOOPBACK)
            if name not in _WILDCARD:
                names.add(name)
        self._own_hosts = frozenset(f"[{n}]:{port}" if ":" in n else f"{n}:{port}"
                                    for n in names)

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        """Every answer, to the app's `observe` when it has one (the webhook's metrics)."""
        observe = getattr(self.app, "observe", None)
        if observe is None:
            return
        try:
            observe(method, path, status, seconds)
        except Exception:  # a measurement never costs an answer
            log.exception("http %s: observing the answer failed", method)

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

    def get_request(self):
        conn, addr = super().get_request()
        try:  # small keep-alive answers must not wait for Nagle's algorithm
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        return conn, addr

    def arm(self, conn: socket.socket) -> None:
        with self._workers_lock:
            if not self._closing:
                self._deadlines[conn] = time.monotonic() + self.handler_timeout
                return
        _cut(conn)  # closing: no new request on a kept-alive connection

    def disarm(self, conn: socket.socket) -> None:
        with self._workers_lock:
            self._deadlines.pop(conn, None)

    def service_actions(self) -> None:
        """Each `serve_forever` poll: cut connections whose request line and headers did not
        arrive within `handler_timeout` in total (a byte every few seconds resets only the
        per-read timeout, not this one)."""
        super().service_actions()
        now = time.monotonic()
        with self._workers_lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
            for conn in late:
                del self._deadlines[conn]
        for conn in late:
            log.info("http dropping a connection: no complete request within %.1fs",
                     self.handler_timeout)
            _cut(conn)

    def handle_error(self, request, client_address) -> None:  # not the stdlib's stderr dump
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client's doing
            log.debug("http connection from %s ended: %r", client_address[0], exc)
        else:
            log.warning("http connection from %s failed", client_address[0], exc_info=True)

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(target=self._work, args=(request, client_address),
                                  name=f"http-{client_address[1]}", daemon=True)
        with self._workers_lock:
            self._workers.add(thread)
        thread.start()

    def _work(self, request, client_address) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._workers_lock:
                self._workers.discard(threading.current_thread())

    def server_close(self) -> None:
        """Stop listening, cut connections that are idle or still sending a request head (no
        answer was promised on them), and wait for in-flight requests to finish."""
        super().server_close()
        with self._workers_lock:
            self._closing = True
            idle, self._deadlines = list(self._deadlines), {}
        for conn in idle:
            _cut(conn)
        deadline = time.monotonic() + self.drain_timeout
        with self._workers_lock:
            workers = list(self._workers)
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))


_WILDCARD = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _printable(text: str, limit: int = 80) -> str:
    return "".join(c if c.isprintable() and c != " " else "?" for c in text[:limit])


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns EOF
    except OSError:
        pass


def make_server(host: str, port: int, app, *, handler_timeout: float = 10.0,
                allowed_hosts: tuple[str, ...] = ()) -> WebhookServer:
    """Bind (port 0 picks a free one; see `server.server_address`); call `serve_forever()`.
    Requests whose `Host` is neither the bound address nor in `allowed_hosts` get 421."""
    return WebhookServer((host, port), app, handler_timeout=handler_timeout,
                         allowed_hosts=allowed_hosts)
