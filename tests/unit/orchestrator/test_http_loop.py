"""The webhook port's event loop (`http_loop`, through `http_server.WebhookServer`): real
sockets on 127.0.0.1 port 0 and a stub app whose slow and deferred answers the tests release.
Every limit of the threaded transport, heads and bodies arriving in pieces, pipelining,
deadlines, the connection cap, the pool, and the drain on close."""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
import unittest

from bot_bottle.orchestrator import http_framing
from bot_bottle.orchestrator.http_server import WebhookServer
from bot_bottle.orchestrator.http_transport import Response
from tests._serve import serve_in_thread

LOGGER = "bot_bottle.orchestrator.http_server"


class StubApp:
    """`/quick…` is begun on the loop (`/quick/now` answers at once, `/quick/boom` raises, any
    other waits for the test: `self.later` gets its `later`); every other route runs on the
    pool (`/hold` until `self.gate` is set, `/boom` raises)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.later: queue.Queue = queue.Queue()
        self.echo: queue.Queue = queue.Queue()
        self.observed: list[tuple[str, str, int]] = []

    def quick(self, method: str, target: str) -> bool:
        return target.startswith("/quick")

    def begin(self, method, target, headers, body, later):
        if target == "/quick/now":
            return Response(201, "text/plain", b"now " + body)
        if target == "/quick/boom":
            raise RuntimeError("boom")
        if target == "/quick/bad":  # not a Response: the loop fails on it
            return "not an answer"
        if target == "/quick/echo":  # answered at once from another thread, as the writer does
            self.echo.put((later, body))
            return None
        self.later.put(later)
        return None

    def handle(self, method, target, headers, body) -> Response:
        if target == "/hold":
            self.entered.set()
            self.gate.wait(10)
        if target == "/boom":
            raise RuntimeError("boom")
        return Response(200, "text/plain", f"{method} {target} {len(body)}".encode())

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.observed.append((method, path, status))


def read_answer(sock: socket.socket, buffered: bytearray, head_only: bool = False):
    """One answer off `sock` (bytes past it stay in `buffered`): (status, headers, body)."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {bytes(buffered)!r}")
        buffered += chunk
    end = buffered.index(b"\r\n\r\n") + 4
    lines = bytes(buffered[:end]).decode("latin-1").split("\r\n")
    del buffered[:end]
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    length = 0 if head_only or status == 100 else int(headers["content-length"])
    while len(buffered) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        buffered += chunk
    body = bytes(buffered[:length])
    del buffered[:length]
    return status, headers, body


class LoopTest(unittest.TestCase):
    def setUp(self) -> None:
        self.app = StubApp()
        self.addCleanup(self.app.gate.set)  # runs before the server's drain
        self.server = self.serve()

    def serve(self, **kw) -> WebhookServer:
        server = WebhookServer(("127.0.0.1", 0), self.app, **kw)
        serve_in_thread(self, server)
        self.addCleanup(self.app.gate.set)
        return server

    def host(self, server=None) -> bytes:
        return b"Host: 127.0.0.1:%d\r\n" % (server or self.server).server_address[1]

    def connect(self, server=None) -> socket.socket:
        sock = socket.create_connection((server or self.server).server_address[:2], timeout=5)
        self.addCleanup(sock.close)
        return sock

    def exchange(self, data: bytes, server=None):
        sock = self.connect(server)
        sock.sendall(data)
        return read_answer(sock, bytearray()), sock

    def assert_closed(self, sock: socket.socket) -> None:
        try:
            self.assertEqual(sock.recv(1), b"")
        except ConnectionResetError:
            pass

    def assert_silent(self, sock: socket.socket, seconds: float = 0.3) -> None:
        readable, _, _ = select.select([sock], [], [], seconds)
        self.assertEqual(readable, [], "an answer came early")

    def assert_refused(self, data: bytes, status: int, pieces: int = 1) -> None:
        sock = self.connect()
        step = -(-len(data) // pieces)
        try:
            for i in range(0, len(data), step):
                sock.sendall(data[i:i + step])
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the rest was sent
        got, headers, body = read_answer(sock, bytearray())
        self.assertEqual((got, headers.get("connection"), headers["x-content-type-options"]),
                         (status, "close", "nosniff"))
        self.assertIn(b'"status": "error"', body)
        self.assert_closed(sock)


class LimitsTest(LoopTest):
    def test_each_limit_of_the_threaded_transport_is_refused_and_closes(self) -> None:
        host = self.host()
        cases = [
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\n" + host + b"X: " + b"a" * 70_000 + b"\r\n\r\n", 431),
            (b"GET / HTTP/1.1\r\n" + host + b"X: v\r\n" * 101 + b"\r\n", 431),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"BREW / HTTP/1.1\r\n" + host + b"\r\n", 501),
            (b"GET /\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n" + host + b"Bad Name: x\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n"
             b"2\r\n{}\r\n0\r\n\r\n", 411),
            (b"POST /x HTTP/1.1\r\n" + host + b"\r\n", 411),
            (b"POST /x HTTP/1.1\r\n" + host + b"Content-Length: 1x\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\n" + host + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n",
             400),
            (b"POST /x HTTP/1.1\r\n" + host + b"Content-Length: %d\r\n\r\n" % ((1 << 20) + 1),
             413),
            (b"GET /ok HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421),
        ]
        for data, status in cases:
            for pieces in (1, 7):
                with self.subTest(status=status, head=data[:30], pieces=pieces), \
                        self.assertLogs(LOGGER, "DEBUG"):
                    self.assert_refused(data, status, pieces)

    def test_a_head_still_arriving_is_refused_once_it_breaks_a_limit(self) -> None:
        """No blank line ever comes: the loop must not buffer on for ever."""
        host = self.host()
        for data, status in [
                (b"GET /" + b"a" * 70_000, 414),
                (b"GET / HTTP/1.1\r\n" + host + b"X: " + b"a" * 70_000, 431),
                (b"GET / HTTP/1.1\r\n" + host + b"X: v\r\n" * 101, 431),
                (b"GET / HTTP/1.1\r\n" + (b"X: " + b"a" * 60_000 + b"\r\n") * 5, 431)]:
            with self.subTest(status=status, size=len(data)), self.assertLogs(LOGGER, "DEBUG"):
                self.assert_refused(data, status)

    def test_the_partial_checks_agree_with_the_parser_s_limits(self) -> None:
        line = b"GET /" + b"a" * (http_framing.MAX_LINE - 16) + b" HTTP/1.1\r\n"
        self.assertEqual(len(line), http_framing.MAX_LINE)  # the longest line allowed
        http_framing.check_partial(bytearray(line + b"X: v\r\n" * 100))
        with self.assertRaises(http_framing.HeadError):
            http_framing.check_partial(bytearray(line + b"X: v\r\n" * 101))
        self.assertEqual(http_framing.parse_head(line + b"\r\n").target[:3], "/aa")
        self.assertEqual(http_framing.head_end(bytearray(b"GET / HTTP/1.1\nA: b\n\nrest")), 21)
        self.assertEqual(http_framing.head_end(bytearray(b"GET / HTTP/1.1\r\nA: b\r\n")), -1)

    def test_a_body_over_the_limit_is_refused_before_it_is_sent(self) -> None:
        sock = self.connect()
        sock.sendall(b"POST /x HTTP/1.1\r\n" + self.host() + b"Expect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % ((1 << 20) + 1))
        self.assertEqual(read_answer(sock, bytearray())[0], 413)  # not 100
        self.assert_closed(sock)


class RequestsTest(LoopTest):
    def test_keep_alive_head_and_close(self) -> None:
        sock = self.connect()
        buffered = bytearray()
        sock.sendall(b"GET /a HTTP/1.1\r\n" + self.host() + b"\r\n")
        status, headers, body = read_answer(sock, buffered)
        self.assertEqual((status, body, headers["x-content-type-options"]), (200, b"GET /a 0",
                                                                            "nosniff"))
        self.assertNotIn("connection", headers)
        sock.sendall(b"HEAD /a HTTP/1.1\r\n" + self.host() + b"\r\n")
        status, headers, body = read_answer(sock, buffered, head_only=True)
        self.assertEqual((status, headers["content-length"]), (200, "8"))  # GET's length
        sock.sendall(b"GET /b HTTP/1.1\r\n" + self.host() + b"Connection: close\r\n\r\n")
        status, headers, body = read_answer(sock, buffered)
        self.assertEqual((status, body, headers["connection"]), (200, b"GET /b 0", "close"))
        self.assert_closed(sock)
        self.assertEqual(buffered, b"")  # HEAD's answer had no body

    def test_http_1_0_closes_unless_told_keep_alive(self) -> None:
        (status, headers, _), sock = self.exchange(b"GET /a HTTP/1.0\r\n" + self.host() + b"\r\n")
        self.assertEqual((status, headers["connection"]), (200, "close"))
        self.assert_closed(sock)

    def test_expect_100_continue_is_answered_before_the_body(self) -> None:
        sock = self.connect()
        buffered = bytearray()
        sock.sendall(b"POST /x HTTP/1.1\r\n" + self.host()
                     + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        self.assertEqual(read_answer(sock, buffered, head_only=True)[0], 100)
        sock.sendall(b"abc")
        self.assertEqual(read_answer(sock, buffered)[2], b"POST /x 3")

    def test_pipelined_requests_are_answered_in_order(self) -> None:
        """A slow pool route, a deferred quick one and an immediate one, sent in one write:
        the answers come in the order asked, each only once the one before it is out."""
        sock = self.connect()
        host = self.host()
        sock.sendall(b"GET /hold HTTP/1.1\r\n" + host + b"\r\n"
                     b"POST /quick/later HTTP/1.1\r\n" + host + b"Content-Length: 2\r\n\r\nhi"
                     b"POST /quick/now HTTP/1.1\r\n" + host + b"Content-Length: 2\r\n\r\nyo"
                     b"GET /last HTTP/1.1\r\n" + host + b"\r\n")
        self.assertTrue(self.app.entered.wait(5))
        self.assert_silent(sock)
        self.app.gate.set()
        buffered = bytearray()
        self.assertEqual(read_answer(sock, buffered)[2], b"GET /hold 0")
        later = self.app.later.get(timeout=5)
        self.assert_silent(sock)
        later(lambda: Response(202, "text/plain", b"stored"))
        self.assertEqual([read_answer(sock, buffered)[:3:2] for _ in range(3)],
                         [(202, b"stored"), (201, b"now yo"), (200, b"GET /last 0")])

    def test_a_slow_route_on_the_pool_does_not_hold_the_loop(self) -> None:
        held = self.connect()
        held.sendall(b"GET /hold HTTP/1.1\r\n" + self.host() + b"\r\n")
        self.assertTrue(self.app.entered.wait(5))
        (status, _, body), _ = self.exchange(b"POST /quick/now HTTP/1.1\r\n" + self.host()
                                             + b"Content-Length: 1\r\n\r\nx")
        self.assertEqual((status, body), (201, b"now x"))
        self.app.gate.set()
        self.assertEqual(read_answer(held, bytearray())[0], 200)

    def test_the_answer_waits_for_later_and_never_comes_before_it(self) -> None:
        sock = self.connect()
        sock.sendall(b"POST /quick/x HTTP/1.1\r\n" + self.host() + b"Content-Length: 0\r\n\r\n")
        later = self.app.later.get(timeout=5)
        self.assert_silent(sock)
        threading.Thread(target=later, args=(lambda: Response(202, "text/plain", b"ok"),)).start()
        self.assertEqual(read_answer(sock, bytearray())[:3:2], (202, b"ok"))
        self.assertIn(("POST", "/quick/x", 202), self.app.observed)

    def test_an_answer_posted_while_the_loop_reads_its_wake_ups_is_not_stranded(self) -> None:
        """The interleaving that stalled the bench's one sender, made to happen: an answer
        posted between the loop's wake-up reset and its read of the wake-up bytes. With the
        reset before the read, the flag stayed set with no byte coming: every later answer
        waited for the loop's next deadline sweep (0.1 s each, 2000 acks took minutes)."""
        socks, laters = [], []
        for name in (b"a", b"b", b"c"):
            sock = self.connect()
            sock.sendall(b"POST /quick/" + name + b" HTTP/1.1\r\n" + self.host()
                         + b"Content-Length: 0\r\n\r\n")
            socks.append(sock)
            laters.append(self.app.later.get(timeout=5))
        answer = lambda: Response(202, "text/plain", b"ok")  # noqa: E731
        real = self.server._wake_r

        class Racing:  # the loop's wake-up socket, with a thread's post inside its read
            def __init__(self) -> None:
                self.raced = False

            def recv(self, size: int) -> bytes:
                if not self.raced:
                    self.raced = True
                    laters[0](answer)
                return real.recv(size)

            def close(self) -> None:
                real.close()
        self.server._wake_r = Racing()
        laters[2](answer)  # wakes the loop: its read posts a's answer
        for sock in (socks[2], socks[0]):
            self.assertEqual(read_answer(sock, bytearray())[0], 202)
        laters[1](answer)
        self.assertEqual(read_answer(socks[1], bytearray())[0], 202)

        def responder() -> None:  # answers at once from another thread, as the writer does
            while (item := self.app.echo.get()) is not None:
                later, body = item
                later(lambda body=body: Response(202, "text/plain", body))
        thread = threading.Thread(target=responder)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(self.app.echo.put, None)
        buffered = bytearray()
        started = time.monotonic()
        for i in range(100):  # stranded, these took 10 s; woken, a few ms
            body = b"%d" % i
            socks[1].sendall(b"POST /quick/echo HTTP/1.1\r\n" + self.host()
                             + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.assertEqual(read_answer(socks[1], buffered)[2], body)
        self.assertLess(time.monotonic() - started, 3.0)

    def test_an_app_that_raises_is_answered_500_and_closed(self) -> None:
        for target in (b"/boom", b"/quick/boom"):
            with self.subTest(target=target), self.assertLogs(LOGGER, "ERROR"):
                (status, headers, body), sock = self.exchange(
                    b"POST " + target + b" HTTP/1.1\r\n" + self.host()
                    + b"Content-Length: 0\r\n\r\n")
                self.assertEqual((status, headers["content-type"], headers["connection"]),
                                 (500, "application/json", "close"))
                self.assert_closed(sock)
        later_sock = self.connect()
        later_sock.sendall(b"POST /quick/x HTTP/1.1\r\n" + self.host()
                           + b"Content-Length: 0\r\n\r\n")
        with self.assertLogs(LOGGER, "ERROR"):
            self.app.later.get(timeout=5)(lambda: 1 / 0)  # making the answer fails
            self.assertEqual(read_answer(later_sock, bytearray())[0], 500)

    def test_a_bug_on_one_connection_closes_it_and_the_loop_serves_on(self) -> None:
        sock = self.connect()
        with self.assertLogs(LOGGER, "ERROR") as logs:
            sock.sendall(b"POST /quick/bad HTTP/1.1\r\n" + self.host()
                         + b"Content-Length: 0\r\n\r\n")
            self.assert_closed(sock)
        self.assertIn("connection failed", logs.output[0])
        (status, _, _), _ = self.exchange(b"GET /a HTTP/1.1\r\n" + self.host() + b"\r\n")
        self.assertEqual(status, 200)

    def test_access_lines_are_debug_below_400_and_info_from_400(self) -> None:
        with self.assertLogs(LOGGER, "DEBUG") as logs:
            self.exchange(b"GET /a HTTP/1.1\r\n" + self.host() + b"Connection: close\r\n\r\n")
        self.assertEqual([(r.levelname, r.getMessage()[:15]) for r in logs.records],
                         [("DEBUG", "http GET /a 200")])
        with self.assertLogs(LOGGER, "DEBUG") as logs:
            self.exchange(b"POST /x HTTP/1.1\r\n" + self.host() + b"\r\n")
        self.assertEqual([(r.levelname, r.getMessage()[:16]) for r in logs.records],
                         [("INFO", "http POST /x 411")])


class TimeTest(LoopTest):
    def setUp(self) -> None:
        self.app = StubApp()
        self.server = self.serve(handler_timeout=0.4)

    def trickle(self, sock: socket.socket, data: bytes) -> None:
        """Send `data` a byte every 0.05 s on a thread (never idle for a whole deadline)."""
        stop = threading.Event()

        def run() -> None:
            for i in range(len(data)):
                if stop.wait(0.05):
                    return
                try:
                    sock.sendall(data[i:i + 1])
                except OSError:
                    return
        thread = threading.Thread(target=run)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)

    def test_a_slow_loris_head_is_cut_without_an_answer(self) -> None:
        sock = self.connect()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        self.trickle(sock, b"X" * 1000)
        with self.assertLogs(LOGGER, "INFO"):
            self.assert_closed(sock)
        self.assertLess(time.monotonic() - started, 2.0)

    def test_a_slow_loris_body_is_answered_408(self) -> None:
        sock = self.connect()
        sock.sendall(b"POST /x HTTP/1.1\r\n" + self.host() + b"Content-Length: 1000\r\n\r\n")
        self.trickle(sock, b"x" * 1000)
        with self.assertLogs(LOGGER, "INFO"):
            status, headers, _ = read_answer(sock, bytearray())
        self.assertEqual((status, headers["connection"]), (408, "close"))
        self.assertIn(("POST", "/x", 408), self.app.observed)

    def test_an_idle_keep_alive_connection_is_closed_after_the_deadline(self) -> None:
        (status, headers, _), sock = self.exchange(b"GET /a HTTP/1.1\r\n" + self.host()
                                                   + b"\r\n")
        self.assertEqual(status, 200)
        started = time.monotonic()
        with self.assertLogs(LOGGER, "INFO"):
            self.assert_closed(sock)
        self.assertLess(time.monotonic() - started, 2.0)

    def test_a_client_that_closes_inside_a_body_is_answered_400(self) -> None:
        sock = self.connect()
        sock.sendall(b"POST /x HTTP/1.1\r\n" + self.host() + b"Content-Length: 10\r\n\r\nabc")
        sock.shutdown(socket.SHUT_WR)
        with self.assertLogs(LOGGER, "INFO"):
            self.assertEqual(read_answer(sock, bytearray())[0], 400)

    def test_a_request_half_closed_after_sending_still_gets_its_answer(self) -> None:
        sock = self.connect()
        sock.sendall(b"GET /hold HTTP/1.1\r\n" + self.host() + b"\r\n")
        sock.shutdown(socket.SHUT_WR)
        self.assertTrue(self.app.entered.wait(5))
        self.app.gate.set()
        status, headers, _ = read_answer(sock, bytearray())
        self.assertEqual((status, headers["connection"]), (200, "close"))


class LoadTest(LoopTest):
    def test_one_connection_over_the_cap_is_answered_503_and_closed(self) -> None:
        socks = []
        for _ in range(256):  # each answered once: accepted and counted
            sock = self.connect()
            sock.sendall(b"GET /a HTTP/1.1\r\n" + self.host() + b"\r\n")
            self.assertEqual(read_answer(sock, bytearray())[0], 200)
            socks.append(sock)
        with self.assertLogs(LOGGER, "WARNING"):
            over = self.connect()
            status, headers, body = read_answer(over, bytearray())
        self.assertEqual((status, headers["connection"]), (503, "close"))
        self.assertIn(b"too many connections", body)
        self.assert_closed(over)
        # one closes (its close answer read: the loop has let it go); a new one is served
        socks[0].sendall(b"GET /a HTTP/1.1\r\n" + self.host() + b"Connection: close\r\n\r\n")
        read_answer(socks[0], bytearray())
        self.assert_closed(socks[0])
        (status, _, _), _ = self.exchange(b"GET /a HTTP/1.1\r\n" + self.host() + b"\r\n")
        self.assertEqual(status, 200)


class DrainTest(unittest.TestCase):
    def setUp(self) -> None:
        self.app = StubApp()
        self.addCleanup(self.app.gate.set)

    def start(self, **kw) -> tuple[WebhookServer, threading.Thread]:
        server = WebhookServer(("127.0.0.1", 0), self.app, **kw)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        self.addCleanup(thread.join, 10)
        return server, thread

    def connect(self, server) -> socket.socket:
        sock = socket.create_connection(server.server_address[:2], timeout=5)
        self.addCleanup(sock.close)
        return sock

    def close_in_thread(self, server) -> threading.Thread:
        closing = threading.Thread(target=lambda: (server.shutdown(), server.server_close()))
        closing.start()
        self.addCleanup(closing.join, 10)
        return closing

    def test_close_cuts_idle_and_half_sent_requests_and_drains_promised_answers(self) -> None:
        server, thread = self.start(drain_timeout=5.0)
        host = b"Host: 127.0.0.1:%d\r\n" % server.server_address[1]
        idle, half, held, deferred = (self.connect(server) for _ in range(4))
        idle.sendall(b"GET /a HTTP/1.1\r\n" + host + b"\r\n")
        read_answer(idle, bytearray())
        half.sendall(b"POST /x HTTP/1.1\r\n" + host + b"Content-Length: 9\r\n\r\nab")
        held.sendall(b"GET /hold HTTP/1.1\r\n" + host + b"\r\n")
        deferred.sendall(b"POST /quick/x HTTP/1.1\r\n" + host + b"Content-Length: 0\r\n\r\n")
        self.assertTrue(self.app.entered.wait(5))
        later = self.app.later.get(timeout=5)
        closing = self.close_in_thread(server)
        for sock in (idle, half):
            self.assertEqual(sock.recv(1), b"")  # cut at once, no answer
        self.assertTrue(closing.is_alive())  # still draining the two promised answers
        self.app.gate.set()
        later(lambda: Response(202, "text/plain", b"stored"))
        for sock, status in ((held, 200), (deferred, 202)):
            got, headers, _ = read_answer(sock, bytearray())
            self.assertEqual((got, headers["connection"]), (status, "close"))
        closing.join(5)
        self.assertFalse(closing.is_alive())
        thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertRaises(OSError, socket.create_connection, server.server_address[:2], 1)

    def test_the_drain_gives_up_after_drain_timeout(self) -> None:
        server, _ = self.start(drain_timeout=0.3)
        self.connect(server).sendall(b"POST /quick/x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                     b"Content-Length: 0\r\n\r\n" % server.server_address[1])
        self.app.later.get(timeout=5)  # never called
        started = time.monotonic()
        self.close_in_thread(server).join(5)
        self.assertLess(time.monotonic() - started, 2.0)
        left = [t.name for t in threading.enumerate() if t.name.startswith("http-")]
        self.assertEqual(left, [])

    def test_close_without_serving_and_shutdown_before_serving_return(self) -> None:
        server = WebhookServer(("127.0.0.1", 0), self.app)
        server.shutdown()  # serve_forever never ran: no wait
        server.serve_forever(0.05)  # asked to stop already: returns at once
        server.server_close()
        server.server_close()  # idempotent


if __name__ == "__main__":
    unittest.main()
