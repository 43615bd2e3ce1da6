"""The service's one HTTP/1.1 transport, for the webhook port (TCP, `http_server`) and the
forge sidecar's Unix socket (`sidecar`): it frames requests and hands each to an app with
`handle(method, path, headers, body) -> Response`, and owns only transport decisions. This
module holds the server's half (`Transport`, mixed into both servers) and the app's types;
`http_handler.Handler` reads and answers each request.

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
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol

from bot_bottle.orchestrator.log_tail import printable as one_line


log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
_LOGGED_PATH = 120  # an agent's 60 KB path must not become 60 KB of log
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
    cut = one_line(text, limit).replace(" ", "?")
    return cut + ("…" if len(text) > limit else "")


def busy_answer(reason: str = "too many connections") -> bytes:
    body = json.dumps({"status": "error", "reason": reason}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


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

    def stream_route(self, path: str) -> Callable[[object], None] | None:
        """A route that gets the raw `http_handler.Handler` after the head (the git gate)."""
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
