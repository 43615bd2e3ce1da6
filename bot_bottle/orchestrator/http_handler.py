"""The request side of the service's one HTTP/1.1 transport (`http_transport`): `Handler`
reads each request of a connection in turn — its head by hand (`http_head`), then the framing
rules and the body under the request's deadline — hands it to the server's app and writes the
answer in one send. Keep-alive, `HEAD` and `Expect: 100-continue` (answered once the head is
accepted) are its business; what is allowed (caps, hosts, deadlines, routes) is the server's.
"""

from __future__ import annotations

import socketserver
import time

from bot_bottle.orchestrator import http_head
from bot_bottle.orchestrator.http_framing import BODY_METHODS, answer, date_header, phrase
from bot_bottle.orchestrator.http_transport import Response, error_response, printable

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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
                      % (code, (message or phrase(code)).encode("latin-1", "replace"),
                         date_header())]

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
        data = answer(response, head_only=self.command == "HEAD", close=self.close_connection)
        try:
            self.wfile.write(data)
        except OSError as exc:  # the client went away; nothing left to tell it
            self.server.logger.debug("http %s: write failed: %s", self.command, exc)
            self.close_connection = True

    def _answer(self, head: http_head.Head) -> Response:
        if self.headers.get("transfer-encoding"):
            self.close_connection = True
            return error_response(411, "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("content-length")
        if raw is None:
            if self.command in BODY_METHODS:
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
