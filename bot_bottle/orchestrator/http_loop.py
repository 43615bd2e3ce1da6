"""The webhook port's transport: ONE `selectors` event-loop thread serves every connection of
the TCP listener (non-blocking sockets), so acking a delivery needs few runnable threads (the
threaded transport ran one per connection, and the GIL bounced between them).

- Reading (`http_conn`, `http_framing`): bytes are buffered per connection; the head is
  parsed once its blank line is in (`http_head`'s parser and limits: 414, 431, 400, 505,
  501; a head still arriving is checked against them too), then the framing rules (chunked
  → 411, no `Content-Length` on a body method → 411, invalid → 400, over `max_body` → 413)
  and the `Host` check (`host_allowed`, → 421); each refusal closes. `Expect: 100-continue`
  is answered once the head is accepted.
- Time: a request's head and body must arrive within `request_deadline` seconds of the
  connection starting to wait for it (so an idle keep-alive connection is cut then too); a
  late head is cut, a late body answered 408. An answer the client does not read within the
  same time is cut. Deadlines are swept every `SWEEP` seconds.
- Apps: a request the app says is `quick(method, target)` (`POST /webhook`) is begun on the
  loop's thread (`app.begin(..., later)`): it answers at once or calls `later(make_answer)`
  from another thread (the store's writer, once its group is committed), and the loop makes
  and writes the answer. Every other request runs `app.handle` on a pool of `workers`
  threads. Threads hand answers back through a deque and a socketpair that wakes the loop.
  One request per connection is in the app at a time, so pipelined answers keep their order.
- Load: beyond `max_connections` open at once a connection is answered 503 and closed.
Every answer carries `nosniff`, has one access line (`Transport.access`: below 400 at DEBUG)
and is `observe`d; no exception reaches the client (500, JSON). `server_close()` stops
listening, cuts connections that are idle or still sending, and waits up to
`drain_timeout` for the answers already promised.
"""

from __future__ import annotations

import collections
import logging
import selectors
import socket
import threading
import time
from typing import Callable, Mapping, Protocol

from bot_bottle.orchestrator.http_conn import APP, BODY, HEAD, Conn
from bot_bottle.orchestrator.http_framing import MAX_HEAD
from bot_bottle.orchestrator.http_pool import Pool
from bot_bottle.orchestrator.http_transport import (
    MAX_BODY, HttpApp, Response, Transport, busy_answer, error_response, printable)

log = logging.getLogger(__name__)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
SWEEP = 0.1  # seconds between deadline sweeps
_LISTENER, _WAKE = object(), object()


class QuickApp(HttpApp, Protocol):
    """An app with requests answered without blocking the loop (`POST /webhook`)."""

    def quick(self, method: str, target: str) -> bool: ...

    def begin(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
              later: Callable[[Callable[[], Response]], None]) -> Response | None: ...


class LoopServer:
    """`serve_forever()` runs the loop on the calling thread until `shutdown()`;
    `server_close()` drains. `server_address` is the bound address (port 0 picks one)."""

    name = "http"
    logger = log
    request_queue_size = 128
    access = Transport.access  # the same access line and app `observe` as the threaded one
    observe = Transport.observe

    def __init__(self, address: tuple[str, int], app: HttpApp | QuickApp, *, request_deadline: float = 10.0,
                 drain_timeout: float = 5.0, max_connections: int = 256,
                 max_body: int = MAX_BODY, workers: int = 2) -> None:
        self.app = app
        self.request_deadline = request_deadline
        self.drain_timeout = drain_timeout
        self.max_connections = max_connections
        self.max_body = max_body
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(self.request_queue_size)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.socket, READ, _LISTENER)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, READ, _WAKE)
        self._woken = False
        self._ready: collections.deque = collections.deque()  # (conn, answer, close) from threads
        self._again: collections.deque = collections.deque()  # conns with a pipelined request
        self._conns: dict[socket.socket, Conn] = {}
        self._quick = getattr(app, "quick", None)
        self._pool = Pool(workers, f"{self.name}-app")
        self.closing = self._stop = self._closed = self._serving = False
        self._stopped = threading.Event()

    def host_allowed(self, host: str | None) -> bool:
        return True

    def open_connections(self) -> list[socket.socket]:
        return list(self._conns)

    # ---- running and stopping ----

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until `shutdown()` (`poll_interval` is accepted as `socketserver`'s; the loop
        wakes for its deadlines every `SWEEP` seconds)."""
        if self._stop:
            return
        self._serving = True
        self._stopped.clear()
        try:
            next_sweep = time.monotonic() + SWEEP
            while not self._stop:
                next_sweep = self._step(next_sweep)
        finally:
            self._serving = False
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` (waits for it); answers promised are written by `server_close`."""
        self._stop = True
        self._wake()
        if self._serving:
            self._stopped.wait()

    def server_close(self) -> None:
        if self._serving:
            self.shutdown()
        if self._closed:
            return
        self._closed = self.closing = self._stop = True
        self._sel.unregister(self.socket)
        self.socket.close()
        for conn in list(self._conns.values()):
            if conn.state in (HEAD, BODY) and not conn.out:  # no answer was promised on it
                self.close(conn)
        deadline = time.monotonic() + self.drain_timeout
        next_sweep = time.monotonic()
        while self._conns and time.monotonic() < deadline:
            next_sweep = self._step(min(next_sweep, deadline))
        for conn in list(self._conns.values()):
            self.close(conn)
        # idle app threads end at once; one stuck in the app is a daemon, left after 1 s
        self._pool.close(max(1.0, deadline - time.monotonic()))
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _step(self, next_sweep: float) -> float:
        timeout = max(0.0, next_sweep - time.monotonic())
        for key, mask in self._sel.select(0 if self._ready or self._again else timeout):
            conn = key.data
            if conn is _LISTENER:
                self._accept()
            elif conn is _WAKE:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
                # only after the bytes are read: a thread that finds this False sends one
                # more, so a post is never left without a wake-up (the deque is read below)
                self._woken = False
            else:
                if mask & READ:
                    self._guarded(conn, conn.read)
                if mask & WRITE and not conn.closed:
                    self._guarded(conn, conn.flush)
        while self._ready:
            conn, answer, close = self._ready.popleft()
            self._guarded(conn, self._deliver, conn, answer, close)
        while self._again:
            conn = self._again.popleft()
            if not conn.closed and conn.state == HEAD:
                self._guarded(conn, conn.advance)
        now = time.monotonic()
        if now < next_sweep:
            return next_sweep
        for conn in [c for c in self._conns.values()
                     if c.deadline is not None and c.deadline <= now]:
            self._guarded(conn, conn.expire, now)
        return now + SWEEP

    def _guarded(self, conn: Conn, work: Callable[..., None], *args) -> None:
        """A bug on one connection closes it, logged; it never stops the loop."""
        try:
            work(*args)
        except Exception:
            self.logger.exception("%s connection failed", self.name)
            self.close(conn)

    # ---- from other threads ----

    def _post(self, conn: Conn, answer, close: bool = False) -> None:
        """An answer for `conn` (a Response, or a function making one on the loop)."""
        self._ready.append((conn, answer, close))
        self._wake()

    def _wake(self) -> None:
        if self._woken:  # a wake-up is coming: the loop resets this before it reads the deque
            return
        self._woken = True
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    # ---- connections (for `http_conn.Conn`) ----

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the backlog waits for the next poll
                self.logger.warning("%s accept failed: %s", self.name, exc)
                return
            if len(self._conns) >= self.max_connections:
                self.logger.warning("%s refused a connection: %d already open", self.name,
                                    self.max_connections)
                try:  # a short write that never blocks
                    sock.send(busy_answer(), socket.MSG_DONTWAIT)
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            try:  # small keep-alive answers must not wait for Nagle's algorithm
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = Conn(self, sock)
            self._conns[sock] = conn
            self.watch(conn)

    def watch(self, conn: Conn) -> None:
        """Have the selector watch what `conn` waits for: bytes to read (unless it has hit
        EOF or buffered a request's worth), room to write (while it has an answer to send)."""
        want = ((READ if not conn.eof and len(conn.buf) <= MAX_HEAD + self.max_body else 0)
                | (WRITE if conn.out else 0))
        if want == conn.events:
            return
        if not conn.events:
            self._sel.register(conn.sock, want, conn)
        elif not want:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, want, conn)
        conn.events = want

    def close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.sock, None)
        if conn.events:
            self._sel.unregister(conn.sock)
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()

    def again(self, conn: Conn) -> None:
        self._again.append(conn)

    # ---- the app ----

    def dispatch(self, conn: Conn, body: bytes) -> None:
        """A whole request (`conn.state` is `APP`): begun here if the app says it is quick,
        else handled on the pool."""
        self.watch(conn)
        method = "GET" if conn.method == "HEAD" else conn.method
        if self._quick is not None and self._quick(method, conn.target):
            try:
                answer = self.app.begin(method, conn.target, conn.headers, body,
                                        lambda make: self._post(conn, make))
            except Exception:
                self.logger.exception("http %s %s: handler failed", method,
                                      printable(conn.target))
                conn.close, answer = True, error_response(500, "internal error")
            if answer is not None:
                conn.answer(answer)
            return
        target, headers = conn.target, conn.headers
        self._pool.submit(lambda: self._handle(conn, method, target, headers, body))

    def _handle(self, conn: Conn, method: str, target: str, headers, body: bytes) -> None:
        """On a pool thread: the app's `handle`, its answer posted to the loop."""
        try:
            self._post(conn, self.app.handle(method, target, headers, body))
        except Exception:
            self.logger.exception("http %s %s: handler failed", method, printable(target))
            self._post(conn, error_response(500, "internal error"), close=True)

    def _deliver(self, conn: Conn, answer, close: bool) -> None:
        if conn.closed or conn.state != APP:
            return
        if not isinstance(answer, Response):
            try:
                answer = answer()
            except Exception:
                self.logger.exception("http %s %s: handler failed", conn.method,
                                      printable(conn.target))
                answer, close = error_response(500, "internal error"), True
        conn.close = conn.close or close
        conn.answer(answer)
