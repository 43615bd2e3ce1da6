"""The service's one HTTP/1.1 transport, for the webhook port (TCP, `http_server`) and the
forge sidecar's Unix socket (`sidecar`): it frames requests and hands each to an app with
`handle(method, path, headers, body) -> Response`, and owns only transport decisions.

- Heads: read by hand (`http_head`, with `http.client`'s limits: 414, 431, 400, 505, 501),
  one thread per connection reading its requests in turn (keep-alive, `HEAD`,
  `Expect: 100-continue` answered once the head is accepted); each answer is one send.
- Framing: chunked bodies → 411, a body method without `Content-Length` → 411, an invalid one
  → 400, one over `max_body` → 413 without reading the body; each of these closes the
  connection (the unread body would be taken for the next request). A `Host` the server does
  not answer for → 421 (`host_allowed`; DNS rebinding on the TCP port).
- Time: a request's head and body must arrive whole within `request_deadline` seconds,
  checked on every `serve_forever` poll (a byte every few seconds resets only the per-read
  `read_timeout`, not this); a late body is answered 408, a late head is cut.
- Load: at most `max_connections` are served at once, and at most `max_per_peer` from one
  peer (`peer_key`: the sidecar's is the caller's bottle); more get 503 from the accept loop
  and are closed, without a thread (so a flood cannot exhaust threads, nor one bottle the
  sidecar).
- A stream route (`stream_route(path)`, the sidecar's git gate) gets the raw handler after the
  head, before any framing, and bounds itself.
Every answer carries `nosniff`; no exception reaches the stdlib (500, JSON); every answer
has one access line (`access`; below 400 at DEBUG), its path cut to printable characters.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Mapping, Protocol

from bot_bottle.orchestrator import http_head

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
_BODY_METHODS = ("POST", "PUT", "PATCH")
_LOGGED_PATH = 120  # an agent's 60 KB path must not become 60 KB of log
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_dates: list = [0, b""]  # the Date header's second and text: formatted once a second


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")


def _date() -> bytes:
    now = int(time.time())
    if _dates[0] != now:
        _dates[:] = [now, formatdate(now, usegmt=True).encode()]
    return _dates[1]


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    who: str = ""  # for the access line, e.g. "run=7" (whose token made the request)


class HttpApp(Protocol):
    def handle(self, method: str, path: str, headers: Mapping[str, str],
               body: bytes) -> Response: ...


def error_response(status: int, reason: str) -> Response:
    body = json.dumps({"status": "error", "reason": reason}).encode()
    return Response(status, "application/json", body)


def printable(text: str, limit: int = _LOGGED_PATH) -> str:
    cut = "".join(c if c.isprintable() and c != " " else "?" for c in text[:limit])
    return cut + ("…" if len(text) > limit else "")


def busy_answer(reason: str = "too many connections") -> bytes:
    body = json.dumps({"status": "error", "reason": reason}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


class Handler(socketserver.StreamRequestHandler):
    """One connection: heads read by `http_head`, bodies by `Content-Length`, answers written
    in one `sendall` each. A stream route gets this object itself, with `rfile`, `wfile`,
    `headers`, `command`, `path`, `send_response`/`send_header`/`end_headers` and
    `close_connection` as `http.server`'s handler has them."""

    rbufsize = 1 << 16  # a delivery's head and body in one read, mostly

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # StreamRequestHandler applies it per read
        super().setup()
        self._head: list[bytes] = []

    def handle(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self) -> None:
        self.server.arm(self.connection)  # head and body must arrive within the deadline
        try:
            self._one_request()
        finally:
            self.server.disarm(self.connection)

    def _one_request(self) -> None:
        self.close_connection = True  # until a whole request has been read and answered
        try:
            head = http_head.read_head(self.rfile)
        except http_head.HeadError as exc:
            self.command, self.path = "", ""
            self.server.logger.debug("%s refused a request head: %d %s", self.server.name,
                                     exc.status, exc.reason)
            return self._write(error_response(exc.status, exc.reason))
        except (TimeoutError, ConnectionError):  # a stalled or cut client: no one to answer
            return
        if head is None:
            return
        self.command, self.path, self.headers = head.method, head.target, head.headers
        self.close_connection = not head.keep_alive
        self._serve(head)

    def address_string(self) -> str:
        return self.client_address[0] if isinstance(self.client_address, tuple) else "unix"

    # ---- the answer, as http.server's handler writes it (the stream route uses these) ----

    def send_response(self, code: int, message: str | None = None) -> None:
        self._head = [b"HTTP/1.1 %d %s\r\nServer: bot-bottle\r\nDate: %s\r\n"
                      % (code, (message or _phrase(code)).encode("latin-1", "replace"),
                         _date())]

    def send_header(self, name: str, value: str) -> None:
        self._head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if name.lower() == "connection" and value.lower() == "close":
            self.close_connection = True

    def end_headers(self) -> None:
        self._head.append(b"\r\n")
        data, self._head = b"".join(self._head), []
        self.wfile.write(data)

    # ---- one request ----

    def _serve(self, head: http_head.Head) -> None:
        started = time.monotonic()
        stream = self.server.stream_route(self.path)
        if stream is not None:
            self.server.disarm(self.connection)  # a push may take long; the route bounds it
            if head.expects_continue:
                self.wfile.write(_CONTINUE)
            return stream(self)
        try:
            response = self._answer(head)
        except TimeoutError:
            self.close_connection = True
            response = error_response(408, "request body too slow")
        except ConnectionError as exc:  # the client hung up mid-body: no one to answer
            self.server.logger.debug("http %s %s: client went away: %s", self.command,
                                     printable(self.path), exc)
            self.close_connection = True
            return
        except Exception:
            self.server.logger.exception("http %s %s: handler failed", self.command,
                                         printable(self.path))
            self.close_connection = True
            response = error_response(500, "internal error")
        seconds = time.monotonic() - started
        # observed and logged before the answer is written: a client that has it sees both
        self.server.observe(self.command, self.path, response.status, seconds)
        self.server.access(self.command, self.path, response, seconds)
        self._write(response)

    def _write(self, response: Response) -> None:
        head = [b"HTTP/1.1 %d %s\r\nServer: bot-bottle\r\nDate: %s\r\n"
                b"X-Content-Type-Options: nosniff\r\n"
                % (response.status, _phrase(response.status).encode(), _date())]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        head.append(b"Content-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
                    % (response.content_type.encode("latin-1", "replace"), len(response.body),
                       b"Connection: close\r\n" if self.close_connection else b""))
        if self.command != "HEAD":
            head.append(response.body)
        try:
            self.wfile.write(b"".join(head))
        except OSError as exc:  # the client went away; nothing left to tell it
            self.server.logger.debug("http %s: write failed: %s", self.command, exc)
            self.close_connection = True

    def _answer(self, head: http_head.Head) -> Response:
        if self.headers.get("transfer-encoding"):
            self.close_connection = True
            return error_response(411, "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("content-length")
        if raw is None:
            if self.command in _BODY_METHODS:
                self.close_connection = True
                return error_response(411, "Content-Length required")
            length = 0
        else:
            if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
                self.close_connection = True
                return error_response(400, "invalid Content-Length")
            length = int(raw)
        if length > self.server.max_body:
            self.close_connection = True  # the unread body makes the stream unusable
            return error_response(413, f"body over {self.server.max_body} bytes")
        host = self.headers.get("host")
        if not self.server.host_allowed(host):
            self.close_connection = True  # the body is not read
            self.server.logger.warning("http %s %s refused: Host %s is not this service's",
                                       self.command, printable(self.path.split("?", 1)[0], 80),
                                       printable(host or "(none)"))
            return error_response(421, "Host names no address this service answers on "
                                       "(see FORGE_ALLOWED_HOSTS)")
        if head.expects_continue:  # the head is accepted: now the client sends the body
            self.wfile.write(_CONTINUE)
        body = self._read_body(length) if length else b""
        if body is None:
            self.close_connection = True
            return error_response(400, "body shorter than Content-Length")
        self.server.disarm(self.connection)  # the request is in: the app bounds its own work
        method = "GET" if self.command == "HEAD" else self.command
        return self.server.app.handle(method, self.path, self.headers, body)

    def _read_body(self, length: int) -> bytes | None:
        """Read exactly `length` bytes before the request's deadline; None on early EOF."""
        deadline = self.server.deadline_of(self.connection)
        self.server.disarm(self.connection)  # enforced here, so a late body is answered 408
        chunks, remaining, shortened = [], length, False
        try:
            while remaining:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("body read deadline passed")
                # a syscall, so only when the deadline is well inside the per-read timeout
                # (the first read mostly finds the body buffered): a read may end past the
                # deadline by at most a tenth of `read_timeout`
                if left < self.server.read_timeout * 0.9:
                    self.connection.settimeout(left)
                    shortened = True
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    return None
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            if shortened:
                self.connection.settimeout(self.server.read_timeout)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Transport:
    """The shared half of both servers (mixed in before a `socketserver` threading server)."""

    daemon_threads = True
    block_on_close = False  # we track and join our own threads, with a bound
    request_queue_size = 128
    name = "http"  # names the access and refusal lines
    logger = log  # a server's own lines go to its module's logger

    def _transport_init(self, app: HttpApp, *, read_timeout: float, request_deadline: float,
                        max_connections: int, drain_timeout: float, max_body: int,
                        max_per_peer: int | None = None) -> None:
        self.app = app
        self.max_per_peer = max_per_peer  # None: no cap per peer (`peer_key`)
        self._per_peer: dict[object, int] = {}
        self.read_timeout = read_timeout
        self.request_deadline = request_deadline
        self.max_connections = max_connections
        self.drain_timeout = drain_timeout
        self.max_body = max_body
        self._lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        self._deadlines: dict[socket.socket, float] = {}
        self._closing = False

    # ---- what the two servers decide differently ----

    def host_allowed(self, host: str | None) -> bool:
        return True

    def stream_route(self, path: str) -> Callable[[Handler], None] | None:
        return None

    def peer_key(self, request: socket.socket) -> object:
        """Whom a connection is counted under for `max_per_peer`."""
        return None

    def access(self, method: str, path: str, response: Response, seconds: float) -> None:
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if not self.logger.isEnabledFor(level):  # the common 2xx: no line, no cut path
            return
        self.logger.log(level, "%s %s %s %d %dB %.1fms%s", self.name, method, printable(path),
                response.status, len(response.body), seconds * 1000,
                f" {response.who}" if response.who else "")

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        """Every answer, to the app's `observe` when it has one (the webhook's metrics)."""
        observe = getattr(self.app, "observe", None)
        if observe is None:
            return
        try:
            observe(method, path, status, seconds)
        except Exception:  # a measurement never costs an answer
            self.logger.exception("%s %s: observing the answer failed", self.name, method)

    # ---- connections and deadlines ----

    def active_connections(self) -> int:
        with self._lock:
            return len(self._workers)

    def arm(self, conn: socket.socket) -> None:
        with self._lock:
            if not self._closing:
                self._deadlines[conn] = time.monotonic() + self.request_deadline
                return
        _cut(conn)  # closing: no new request on a kept-alive connection

    def disarm(self, conn: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def deadline_of(self, conn: socket.socket) -> float:
        with self._lock:
            return self._deadlines.get(conn, time.monotonic() + self.request_deadline)

    def service_actions(self) -> None:
        """Each `serve_forever` poll: cut connections whose request did not arrive in time."""
        super().service_actions()
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._deadlines.items() if deadline <= now]
            for conn in late:
                del self._deadlines[conn]
        for conn in late:
            self.logger.info("%s dropping a connection: no complete request within %.1fs",
                             self.name, self.request_deadline)
            _cut(conn)

    def process_request(self, request, client_address) -> None:
        key = self.peer_key(request) if self.max_per_peer is not None else None
        with self._lock:
            if len(self._workers) >= self.max_connections:
                busy = f"{self.max_connections} already open"
            elif key is not None and self._per_peer.get(key, 0) >= self.max_per_peer:
                busy = f"{self.max_per_peer} already open from {key}"
            else:
                busy = ""
                thread = threading.Thread(target=self._work, args=(request, client_address, key),
                                          name=f"{self.name}-conn", daemon=True)
                self._workers.add(thread)
                if key is not None:
                    self._per_peer[key] = self._per_peer.get(key, 0) + 1
        if busy:  # answered from the accept loop: a short write that never blocks
            self.logger.warning("%s refused a connection: %s", self.name, busy)
            try:
                request.send(busy_answer(), socket.MSG_DONTWAIT)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        thread.start()

    def _work(self, request, client_address, key: object = None) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())
                self._deadlines.pop(request, None)
                if key is not None:
                    left = self._per_peer.pop(key, 1) - 1
                    if left:
                        self._per_peer[key] = left

    def handle_error(self, request, client_address) -> None:  # not the stdlib's stderr dump
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client's doing, or a cut
            self.logger.debug("%s connection ended: %r", self.name, exc)
        else:
            self.logger.warning("%s connection failed", self.name, exc_info=True)

    def server_close(self) -> None:
        """Stop listening, cut connections that are idle or still sending a request (no
        answer was promised on them), and wait up to `drain_timeout` for the rest."""
        super().server_close()
        with self._lock:
            self._closing = True
            idle, self._deadlines = list(self._deadlines), {}
        for conn in idle:
            _cut(conn)
        deadline = time.monotonic() + self.drain_timeout
        with self._lock:
            workers = list(self._workers)
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns EOF
    except OSError:
        pass
