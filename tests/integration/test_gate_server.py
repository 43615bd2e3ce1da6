"""Integration: the host side of the egress gate (bot_bottle.gate.egress.Gate) served on a real
unix socket in this process, against real servers on 127.0.0.1 (plain TCP, HTTP, and HTTPS
with an `openssl` certificate), spoken to the way the bottle's forwarder relays the agent."""

import http.server
import os
import socket
import socketserver
import ssl
import stat
import tempfile
import threading
import time
import unittest
from pathlib import Path

from bot_bottle.gate import PLACEHOLDER
from bot_bottle.gate.credentials import Upstream
from bot_bottle.gate.egress import Gate
from bot_bottle.gate.plan import EgressPlan, GitRoute
from tests._serve import serve_connections
from tests.integration._gate_servers import Server, make_cert, tls_server

KEY = "sk-ant-api03-" + "k" * 40


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


class GateServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.cert, cls.key = make_cert(Path(cls._tmp.name))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name) / "state"
        self.dir.mkdir()
        self.refusals = []

    def gate(self, *, pins=(), upstreams=(), ca_file=None, allow=("echo.test", "web.test")) -> Path:
        plan = EgressPlan(allow=tuple(allow), upstreams=tuple(upstreams), pins=tuple(pins), ca_file=ca_file)
        gate = Gate(plan, lambda *a: self.refusals.append(a)).listen(self.dir / "egress.sock")
        self.addCleanup(gate.stop)
        self.gate_obj = gate
        return self.dir / "egress.sock"

    def client(self, path: Path) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(15)
        s.connect(str(path))
        self.addCleanup(s.close)
        return s

    def echo_server(self) -> int:
        listener = socket.create_server(("127.0.0.1", 0))

        def echo(conn):
            threading.Thread(target=lambda c=conn: (c.sendall(b"echo:" + c.recv(100)), c.close()),
                             daemon=True).start()
        serve_connections(self.addCleanup, listener, echo)
        return listener.getsockname()[1]

    def test_the_socket_is_private_to_the_user_and_gone_after_stop(self):
        path = self.gate()
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(path.parent).st_mode), 0o700)
        self.gate_obj.stop()
        self.assertFalse(path.exists())

    def test_connect_to_a_pinned_name_tunnels_bytes_sent_with_the_head(self):
        port = self.echo_server()
        c = self.client(self.gate(pins=[("echo.test", "127.0.0.1", port)]))
        c.sendall(b"CONNECT echo.test:443 HTTP/1.1\r\nHost: echo.test:443\r\n\r\nping")
        self.assertEqual(recv_all(c), b"HTTP/1.1 200 Connection established\r\n\r\necho:ping")
        self.assertEqual(self.gate_obj.counts["connect"], 1)

    def test_a_refusal_is_a_403_with_its_reason_and_is_reported(self):
        c = self.client(self.gate())
        c.sendall(b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n")
        data = recv_all(c).decode()
        self.assertTrue(data.startswith("HTTP/1.1 403 Forbidden\r\n"), data)
        self.assertTrue(data.endswith("\r\n\r\nbot-bottle egress gate: refused evil.example:443: "
                                      "not on the bottle's egress allowlist\n"), data)
        self.assertEqual(self.refusals, [("evil.example", 443, "not on the bottle's egress allowlist")])

    def test_a_plain_http_request_goes_on_in_origin_form_and_comes_back_closing(self):
        web = Server("web").start(self.addCleanup)
        c = self.client(self.gate(pins=[("web.test", "127.0.0.1", web.port)]))
        c.sendall(b"GET http://web.test/a?b=1 HTTP/1.1\r\nHost: web.test\r\nProxy-Connection: keep-alive\r\n"
                  b"Proxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n")
        data = recv_all(c).decode()
        self.assertIn("\r\nConnection: close\r\n", data)
        self.assertNotIn("keep-alive", data.lower())
        self.assertTrue(data.endswith("hello from web /a?b=1"), data)
        [seen] = web.requests
        self.assertEqual(seen["path"], "/a?b=1")
        self.assertEqual(seen["headers"].get("connection"), "close")
        self.assertNotIn("proxy-authorization", seen["headers"])
        self.assertNotIn("proxy-connection", seen["headers"])

    def test_the_upstream_route_carries_the_real_key_over_verified_tls(self):
        api = tls_server(self.cert, self.key, self.addCleanup)
        up = Upstream("anthropic", f"https://localhost:{api.port}", "x-api-key", KEY)
        c = self.client(self.gate(upstreams=[up], ca_file=str(self.cert)))
        body = b'{"model":"m"}'
        c.sendall(b"POST /_upstream/anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n"
                  b"x-api-key: " + PLACEHOLDER.encode() + b"\r\nContent-Length: 13\r\n\r\n" + body)
        data = recv_all(c).decode()
        self.assertTrue(data.startswith("HTTP/1.1 200 "), data)
        self.assertNotIn(KEY, data)
        [seen] = api.requests
        self.assertEqual((seen["path"], seen["headers"]["x-api-key"], seen["body"]), ("/v1/messages", KEY, body))
        self.assertEqual(seen["headers"]["host"], f"localhost:{api.port}")

    def test_a_base_url_request_sent_through_the_proxy_despite_no_proxy_still_takes_the_route(self):
        api = tls_server(self.cert, self.key, self.addCleanup)
        up = Upstream("anthropic", f"https://localhost:{api.port}", "x-api-key", KEY)
        c = self.client(self.gate(upstreams=[up], ca_file=str(self.cert)))
        c.sendall(b"GET http://127.0.0.1:3128/_upstream/anthropic/v1/models?limit=1 HTTP/1.1\r\n"
                  b"Host: 127.0.0.1:3128\r\n\r\n")
        self.assertTrue(recv_all(c).startswith(b"HTTP/1.1 200 "))
        self.assertEqual([(q["path"], q["headers"]["x-api-key"]) for q in api.requests],
                         [("/v1/models?limit=1", KEY)])
        self.assertEqual(self.refusals, [])

    def test_an_upstream_whose_certificate_does_not_verify_never_sees_the_request(self):
        api = tls_server(self.cert, self.key, self.addCleanup)
        up = Upstream("anthropic", f"https://localhost:{api.port}", "x-api-key", KEY)
        c = self.client(self.gate(upstreams=[up]))   # the system's trust store: not our certificate
        c.sendall(b"POST /_upstream/anthropic/v1/messages HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        data = recv_all(c).decode()
        self.assertTrue(data.startswith("HTTP/1.1 502 Bad Gateway"), data)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", data)
        self.assertEqual(api.requests, [])

    def test_requests_that_are_neither_proxy_nor_route_are_refused_as_bad(self):
        path = self.gate()
        for raw, status, words in [
                (b"GET / HTTP/1.1\r\n\r\n", 400, "not a proxy request"),
                (b"GET https://web.test/ HTTP/1.1\r\n\r\n", 400, "go through CONNECT"),
                (b"GET /_upstream/nope/x HTTP/1.1\r\n\r\n", 404, "no upstream 'nope'"),
                (b"CONNECT web.test HTTP/1.1\r\n\r\n", 400, "a port is required"),
                (b"garbage\r\n\r\n", 400, "malformed request line")]:
            with self.subTest(raw=raw):
                c = self.client(path)
                c.sendall(raw)
                data = recv_all(c).decode()
                self.assertTrue(data.startswith(f"HTTP/1.1 {status} "), data)
                self.assertIn(words, data)
        self.assertEqual(self.refusals, [])

    def test_past_its_connection_limit_the_gate_answers_503_until_one_closes(self):
        plan = EgressPlan(allow=("web.test",))
        gate = Gate(plan, max_connections=2).listen(self.dir / "egress.sock")
        self.addCleanup(gate.stop)
        held = [self.client(self.dir / "egress.sock") for _ in range(2)]
        for c in held:
            c.sendall(b"CONNECT web.test:443 HTTP/1.1\r\n")   # a head not finished: holds its slot
        extra = self.client(self.dir / "egress.sock")
        data = recv_all(extra).decode()
        self.assertTrue(data.startswith("HTTP/1.1 503 "), data)
        self.assertIn("more than 2 open connections", data)
        held[0].close()
        deadline = time.monotonic() + 10
        while True:   # the slot frees once the gate has seen the close
            c = self.client(self.dir / "egress.sock")
            try:
                c.sendall(b"GET / HTTP/1.1\r\n\r\n")
                if recv_all(c).startswith(b"HTTP/1.1 400 "):
                    break
            except (ConnectionResetError, BrokenPipeError):   # still busy: the 503 came first
                pass
            self.assertLess(time.monotonic(), deadline, "the slot was never freed")

    def test_stop_ends_open_tunnels(self):
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        c = self.client(self.gate(pins=[("echo.test", "127.0.0.1", listener.getsockname()[1])]))
        c.sendall(b"CONNECT echo.test:1 HTTP/1.1\r\n\r\n")
        self.assertEqual(c.recv(100), b"HTTP/1.1 200 Connection established\r\n\r\n")
        upstream, _ = listener.accept()
        self.addCleanup(upstream.close)
        self.gate_obj.stop()
        self.assertEqual(c.recv(100), b"", "the tunnel outlived the gate")

    def git_socket(self) -> tuple[Path, list]:
        """A stand-in for the orchestrator's sidecar socket: records each request, answers 200."""
        seen: list = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.command, self.path, self.headers.get_all("Authorization"),
                             self.headers.get("Connection"), body))
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"hello")

            do_GET = do_POST

        path = self.dir.parent / "sidecar.sock"
        server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return path, seen

    def git_gate(self, sock: Path | None) -> Path:
        plan = EgressPlan(allow=(), git=GitRoute(str(sock), "the-run-token") if sock else None)
        gate = Gate(plan, lambda *a: self.refusals.append(a)).listen(self.dir / "egress.sock")
        self.addCleanup(gate.stop)
        return self.dir / "egress.sock"

    def test_the_git_route_reaches_the_sidecar_socket_with_the_run_token_in_place_of_the_agents(self):
        sock, seen = self.git_socket()
        path = self.git_gate(sock)
        c = self.client(path)
        c.sendall(b"POST /_git/acme/widgets.git/git-receive-pack HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n"
                  b"Authorization: Basic bWU6c3RvbGVu\r\nContent-Length: 4\r\n\r\npack")
        data = recv_all(c).decode()
        self.assertTrue(data.startswith("HTTP/1.1 200 ") and data.endswith("hello"), data)
        c = self.client(path)   # also when the agent's client sends it through the proxy
        c.sendall(b"GET http://127.0.0.1:3128/_git/acme/widgets.git/info/refs?service=git-upload-pack "
                  b"HTTP/1.1\r\nHost: 127.0.0.1:3128\r\n\r\n")
        self.assertTrue(recv_all(c).startswith(b"HTTP/1.1 200 "))
        self.assertEqual(seen, [
            ("POST", "/git/acme/widgets.git/git-receive-pack", ["Bearer the-run-token"], "close", b"pack"),
            ("GET", "/git/acme/widgets.git/info/refs?service=git-upload-pack", ["Bearer the-run-token"],
             "close", b"")])
        self.assertEqual(self.refusals, [])

    def test_the_git_route_without_an_orchestrator_or_its_socket_is_an_error_not_a_hang(self):
        for sock, status, words in [(None, 404, "no git gate for this bottle"),
                                    (self.dir.parent / "missing.sock", 502, "git gate is not reachable")]:
            with self.subTest(status=status):
                c = self.client(self.git_gate(sock))
                c.sendall(b"GET /_git/acme/widgets.git/info/refs HTTP/1.1\r\n\r\n")
                data = recv_all(c).decode()
                self.assertTrue(data.startswith(f"HTTP/1.1 {status} "), data)
                self.assertIn(words, data)

    def test_bad_tls_context_settings_fail_loudly(self):
        with self.assertRaises((OSError, ssl.SSLError)):
            Gate(EgressPlan(allow=(), ca_file=str(self.dir / "missing.pem")))


if __name__ == "__main__":
    unittest.main()
