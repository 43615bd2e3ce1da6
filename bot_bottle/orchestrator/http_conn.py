"""One connection of the webhook port's event loop (`http_loop`): its bytes buffered both
ways and where its current request is — `HEAD` (reading the head), `BODY` (reading the
body), `APP` (with the app: nothing more is read into a request, so pipelined answers keep
their order), `SEND` (its answer being written). Every method runs on the loop's thread; what
is allowed (limits, hosts, deadlines) and what runs the app are the server's.
"""

from __future__ import annotations

import socket
import time

from bot_bottle.orchestrator import http_framing as framing
from bot_bottle.orchestrator.http_head import HeadError
from bot_bottle.orchestrator.http_transport import Response, error_response, printable

HEAD, BODY, APP, SEND = "head", "body", "app", "send"
RECV = 1 << 16


class Conn:
    __slots__ = ("server", "sock", "buf", "out", "state", "deadline", "method", "target",
                 "headers", "length", "close", "eof", "started", "events", "closed")

    def __init__(self, server, sock: socket.socket) -> None:
        self.server = server  # `http_loop.LoopServer`
        self.sock = sock
        self.buf = bytearray()
        self.out = bytearray()
        self.state, self.deadline = HEAD, time.monotonic() + server.request_deadline
        self.method = self.target = ""
        self.headers: object = None
        self.length = 0
        self.close = self.eof = self.closed = False
        self.started = 0.0
        self.events = 0  # what the server's selector watches for it

    # ---- reading ----

    def read(self) -> None:
        try:
            data = self.sock.recv(RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.server.logger.debug("%s connection ended: %r", self.server.name, exc)
            return self.server.close(self)
        if data:
            self.buf += data
            if self.state in (HEAD, BODY):
                return self.advance()
            return self.server.watch(self)  # buffered until the answer is written
        self.eof = True
        if self.state == BODY:  # as the threaded transport: answered, then closed
            self.close = True
            return self.answer(error_response(400, "body shorter than Content-Length"))
        if self.state == HEAD:  # nothing promised; half a head is no request
            return self.server.close(self)
        self.server.watch(self)  # the answer is still written, then the connection closed

    def advance(self) -> None:
        """Go on with the request in the buffer: its head, then its body, then the app."""
        if self.state == HEAD and not self._take_head():
            return
        if len(self.buf) < self.length:
            return self.server.watch(self)
        body = bytes(self.buf[:self.length])
        del self.buf[:self.length]
        self.state, self.deadline = APP, None  # the request is in: the app bounds its work
        self.server.dispatch(self, body)

    def _take_head(self) -> bool:
        """Parse a whole head, check its framing and `Host`; True once the body is next."""
        buf, server = self.buf, self.server
        end = framing.head_end(buf)
        try:
            if end < 0:
                framing.check_partial(buf)
                server.watch(self)
                return False
            raw = bytes(buf[:end])
            del buf[:end]
            head = framing.parse_head(raw)
        except HeadError as exc:
            server.logger.debug("%s refused a request head: %d %s", server.name, exc.status,
                                exc.reason)
            self.close, self.method, self.target = True, "", ""
            self.send(error_response(exc.status, exc.reason))
            return False
        if head is None:
            server.close(self)
            return False
        self.method, self.target, self.headers = head.method, head.target, head.headers
        self.close, self.started = not head.keep_alive, time.monotonic()
        try:
            self.length = framing.body_length(head, server.max_body)
        except HeadError as exc:
            self.close = True
            self.answer(error_response(exc.status, exc.reason))
            return False
        host = head.headers.get("host")
        if not server.host_allowed(host):
            self.close = True  # the body is not read
            server.logger.warning("http %s %s refused: Host %s is not this service's",
                                  head.method, printable(head.target.split("?", 1)[0], 80),
                                  printable(host or "(none)"))
            self.answer(error_response(421, "Host names no address this service answers on "
                                            "(see FORGE_ALLOWED_HOSTS)"))
            return False
        self.state = BODY
        if head.expects_continue and len(buf) < self.length:
            self.out += framing.CONTINUE
            self.flush()
        return not self.closed

    # ---- writing ----

    def answer(self, response: Response) -> None:
        """The request's answer: observed and logged, then written."""
        seconds = time.monotonic() - self.started
        self.server.observe(self.method, self.target, response.status, seconds)
        self.server.access(self.method, self.target, response, seconds)
        self.send(response)

    def send(self, response: Response) -> None:
        self.close = self.close or self.eof or self.server.closing
        self.out += framing.answer(response, head_only=self.method == "HEAD", close=self.close)
        self.state, self.deadline = SEND, time.monotonic() + self.server.request_deadline
        self.flush()

    def flush(self) -> None:
        """Write what the socket takes now; the rest when it is writable. Once an answer is
        out: close, or wait for the next request (at once if it is buffered already)."""
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:  # the client went away; nothing left to tell it
            self.server.logger.debug("%s %s: write failed: %s", self.server.name, self.method,
                                     exc)
            return self.server.close(self)
        del self.out[:sent]
        if self.out or self.state != SEND:
            return self.server.watch(self)
        if self.close:
            return self.server.close(self)
        self.state, self.deadline = HEAD, time.monotonic() + self.server.request_deadline
        self.length = 0
        self.server.watch(self)
        if self.buf:  # a pipelined request: read on the loop's next pass, not in this stack
            self.server.again(self)

    def expire(self, now: float) -> None:
        """Its deadline passed: a late body is answered 408, a late head or an answer not
        read in time is cut."""
        if self.state == BODY and not self.out:
            self.close = True
            return self.answer(error_response(408, "request body too slow"))
        if self.state == HEAD and not self.out:
            self.server.logger.info("%s dropping a connection: no complete request within "
                                    "%.1fs", self.server.name, self.server.request_deadline)
        else:
            self.server.logger.debug("%s dropping a connection: answer not read in time",
                                     self.server.name)
        self.server.close(self)
