"""The transport's head parser (`http_head`) and the limits it enforces, each answered with
the status `http.server` gave: first on bytes alone, then over a real socket of the webhook
port, where the refusal closes the connection and a good head keeps it."""

from __future__ import annotations

import functools
import http.client
import io
import socket
import unittest

from bot_bottle.contrib.gitea.signature import sign, verify_signature
from bot_bottle.orchestrator import http_head as H
from bot_bottle.orchestrator.webhook import WebhookApp, make_server
from tests._serve import serve_in_thread

from .test_webhook import ISSUE_OPENED, SECRET, ViewsStub, open_store, stored


def head_of(data: bytes) -> H.Head | None:
    return H.read_head(io.BufferedReader(io.BytesIO(data)))


def refusal(data: bytes) -> int:
    with unittest.TestCase().assertRaises(H.HeadError) as caught:
        head_of(data)
    return caught.exception.status


class ParserTest(unittest.TestCase):
    def test_a_head_gives_method_target_version_and_fields_by_any_case(self) -> None:
        head = head_of(b"POST /webhook?x=1 HTTP/1.1\r\nHost: a:1\r\nX-Gitea-Event:  issues \r\n"
                       b"Content-Length: 2\r\n\r\n{}")
        self.assertEqual((head.method, head.target, head.version), ("POST", "/webhook?x=1", (1, 1)))
        self.assertEqual(head.headers.get("x-gitea-event"), "issues")
        self.assertEqual(head.headers.get("X-GITEA-EVENT"), "issues")
        self.assertEqual(head.headers["content-length"], "2")
        self.assertIn("Host", head.headers)
        self.assertEqual(dict(head.headers.items())["host"], "a:1")
        self.assertIsNone(head.headers.get("Transfer-Encoding"))

    def test_keep_alive_follows_the_version_and_connection_header(self) -> None:
        self.assertTrue(head_of(b"GET / HTTP/1.1\r\n\r\n").keep_alive)
        self.assertFalse(head_of(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive)
        self.assertFalse(head_of(b"GET / HTTP/1.0\r\n\r\n").keep_alive)
        self.assertTrue(head_of(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive)
        self.assertTrue(head_of(b"GET / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expects_continue)
        self.assertFalse(
            head_of(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue)

    def test_a_closed_connection_or_an_empty_line_is_no_request(self) -> None:
        self.assertIsNone(head_of(b""))
        self.assertIsNone(head_of(b"\r\n"))
        with self.assertRaises(ConnectionError):
            head_of(b"GET / HTTP/1.1\r\nHost: a")  # cut inside the head

    def test_line_and_count_limits_are_httplib_s(self) -> None:
        self.assertEqual(refusal(b"GET /" + b"a" * H.MAX_LINE + b" HTTP/1.1\r\n\r\n"), 414)
        self.assertEqual(refusal(b"GET / HTTP/1.1\r\nX: " + b"a" * H.MAX_LINE + b"\r\n\r\n"), 431)
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(H.MAX_HEADERS))
        self.assertEqual(len(head_of(b"GET / HTTP/1.1\r\n" + fields + b"\r\n").headers), 100)
        self.assertEqual(refusal(b"GET / HTTP/1.1\r\n" + fields + b"Y: v\r\n\r\n"), 431)

    def test_malformed_heads_are_400_505_or_501(self) -> None:
        for bad in (b"GET /\r\n\r\n", b"GET / HTTP/1.1 x\r\n\r\n", b"GET / HTTQ/1.1\r\n\r\n",
                    b"GET / HTTP/1\r\n\r\n", b"GET / HTTP/0.9\r\n\r\n",
                    b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", b"GET / HTTP/1.1\r\nX : v\r\n\r\n",
                    b"GET / HTTP/1.1\r\nX: v\r\n folded\r\n\r\n",
                    b"GET / HTTP/1.1\r\n: v\r\n\r\n",
                    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"):
            with self.subTest(bad=bad):
                self.assertEqual(refusal(bad), 400)
        self.assertEqual(refusal(b"GET / HTTP/2.0\r\n\r\n"), 505)
        self.assertEqual(refusal(b"BREW /pot HTTP/1.1\r\n\r\n"), 501)
        # the same length twice is one framing, and the first of other repeats counts
        head = head_of(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n"
                       b"X-A: 1\r\nX-A: 2\r\n\r\n")
        self.assertEqual((head.headers["content-length"], head.headers["x-a"]), ("2", "1"))

    def test_a_scheme_relative_target_is_made_a_path(self) -> None:
        self.assertEqual(head_of(b"GET //evil.example/x HTTP/1.1\r\n\r\n").target,
                         "/evil.example/x")


class LimitsOverTheSocketTest(unittest.TestCase):
    """Each refusal answers, says `Connection: close` and closes; a good request does not."""

    def setUp(self) -> None:
        self.store = open_store(self)
        app = WebhookApp(self.store, verify=functools.partial(verify_signature, SECRET),
                         views=ViewsStub(), clock=lambda: 1_700_000_000.0)
        server = make_server("127.0.0.1", 0, app)
        serve_in_thread(self, server)
        self.port = server.server_address[1]
        self.host = b"Host: 127.0.0.1:%d\r\n" % self.port

    def send(self, data: bytes) -> tuple[http.client.HTTPResponse, socket.socket]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        resp.read()
        return resp, sock

    def assert_refused(self, data: bytes, status: int) -> None:
        resp, sock = self.send(data)
        self.assertEqual((resp.status, resp.will_close, resp.getheader("Content-Type")),
                         (status, True, "application/json"))
        self.assertEqual(resp.getheader("X-Content-Type-Options"), "nosniff")
        self.assertEqual(sock.recv(1), b"")  # the server closed its end

    def test_each_limit_is_refused_with_its_status_and_closes(self) -> None:
        cases = [
            (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\n" + self.host + b"X: " + b"a" * 70_000 + b"\r\n\r\n", 431),
            (b"GET / HTTP/1.1\r\n" + self.host + b"X: v\r\n" * 101 + b"\r\n", 431),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"BREW / HTTP/1.1\r\n" + self.host + b"\r\n", 501),
            (b"GET /\r\n\r\n", 400),
            (b"POST /webhook HTTP/1.1\r\n" + self.host + b"Transfer-Encoding: chunked\r\n\r\n"
             b"2\r\n{}\r\n0\r\n\r\n", 411),
            (b"POST /webhook HTTP/1.1\r\n" + self.host + b"\r\n", 411),
            (b"POST /webhook HTTP/1.1\r\n" + self.host + b"Content-Length: 1x\r\n\r\n", 400),
            (b"POST /webhook HTTP/1.1\r\n" + self.host
             + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
            (b"POST /webhook HTTP/1.1\r\n" + self.host + b"Content-Length: %d\r\n\r\n"
             % ((1 << 20) + 1), 413),
            (b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421),
        ]
        for data, status in cases:
            with self.subTest(status=status, head=data[:40]):
                self.assert_refused(data, status)
        self.assertEqual(stored(self.store), {})

    def test_expect_100_continue_is_answered_before_the_body_is_sent(self) -> None:
        body = ISSUE_OPENED
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /webhook HTTP/1.1\r\n" + self.host
                     + b"X-Gitea-Event-Type: issues\r\nX-Gitea-Delivery: c-1\r\n"
                     + b"X-Gitea-Signature: %s\r\n" % sign(SECRET, body).encode()
                     + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        self.assertEqual((resp.status, resp.will_close), (202, False))

    def test_a_refused_expectation_gets_the_refusal_not_100(self) -> None:
        self.assert_refused(b"POST /webhook HTTP/1.1\r\n" + self.host
                            + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                            % ((1 << 20) + 1), 413)

    def test_connection_close_and_http_1_0_close_after_the_answer(self) -> None:
        for data in (b"GET /healthz HTTP/1.1\r\n" + self.host + b"Connection: close\r\n\r\n",
                     b"GET /healthz HTTP/1.0\r\n" + self.host + b"\r\n"):
            with self.subTest(data=data):
                resp, sock = self.send(data)
                self.assertEqual((resp.status, resp.getheader("Connection")), (200, "close"))
                self.assertEqual(sock.recv(1), b"")

    def test_http_1_0_keep_alive_and_pipelined_requests_share_the_connection(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        one = b"GET /healthz HTTP/1.0\r\n" + self.host + b"Connection: keep-alive\r\n\r\n"
        sock.sendall(one + one)  # the second head is already buffered when the first is read
        data = b""
        while data.count(b'{"status": "ok"}') < 2:
            chunk = sock.recv(4096)
            self.assertTrue(chunk, f"closed after {data!r}")
            data += chunk
        self.assertEqual(data.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertNotIn(b"Connection: close", data)


if __name__ == "__main__":
    unittest.main()
