"""The webhook receiver and the orchestrator's HTTP server: real HTTP on 127.0.0.1, the real
signature check, and a store that must have recorded a delivery before any 2xx."""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import socket
import sqlite3
import tempfile
import threading
import time
import unittest
from pathlib import Path

from bot_bottle.contrib.gitea.signature import sign, verify_signature
from bot_bottle.orchestrator.events import Payloads
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.store import SqliteRunStore
from bot_bottle.orchestrator.webhook import WebhookApp, make_server
from tests._serve import serve_in_thread
from ._gitea_helpers import GITEA_DATA

SECRET = b"test-webhook-secret"
ISSUE_OPENED = json.dumps({
    "action": "opened",
    "number": 42,
    "issue": {"number": 42, "title": "Widgets crash on empty input"},
    "repository": {"full_name": "acme/widgets"},
}).encode()


def open_store(test: unittest.TestCase, **kw) -> SqliteRunStore:
    """A real `SqliteRunStore` on a fresh file, closed at cleanup."""
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    store = SqliteRunStore(Path(tmp.name) / "orchestrator.db", **kw)
    test.addCleanup(store.close)
    return store


def closed_store(test: unittest.TestCase) -> SqliteRunStore:
    """A store that can no longer answer: every write raises `StoreError`, `ping` is False."""
    store = open_store(test)
    store.close()
    return store


def stored(store: SqliteRunStore) -> dict[str, tuple[str, bytes, float]]:
    return {d.delivery_id: (d.event_type, d.body, d.received_at)
            for d in store.pending_deliveries(100)}


def comment_body(comment_id: int, updated_at: str, pad: str = "") -> bytes:
    """A signed-able `issue_comment` `created` payload (the fields dedupe reads)."""
    return json.dumps({
        "action": "created",
        "issue": {"number": 42},
        "comment": {"id": comment_id, "body": "@bot go" + pad, "user": {"login": "alice"},
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": updated_at},
        "repository": {"full_name": "acme/widgets", "name": "widgets",
                       "owner": {"login": "acme"}},
    }).encode()


class ViewsStub:
    def __init__(self) -> None:
        self.runs_data = {7: {"id": 7, "state": "running"}}

    def dashboard(self) -> str:
        return "<!doctype html><title>runs</title><p>7 running</p>"

    def runs(self, include_destroyed: bool = False) -> list:
        return list(self.runs_data.values()) + ([{"id": 1, "state": "destroyed"}] if include_destroyed else [])

    def run(self, run_id: int):
        return self.runs_data.get(run_id)

    def provenance(self, run_id: int):
        return {"run": self.runs_data[run_id], "ops": []} if run_id in self.runs_data else None

    def metrics(self) -> str:
        return 'bot_bottle_runs{state="running"} 1\n'


class ServerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.addCleanup(self.assert_no_handler_threads_left)  # runs last
        self.store = open_store(self)
        self.woken = threading.Event()
        self.port = self.serve(self.app(self.store))

    def assert_no_handler_threads_left(self) -> None:
        left = [t.name for t in threading.enumerate() if t.name.startswith("http-")]
        self.assertEqual(left, [])

    def app(self, store, **kw) -> WebhookApp:
        kw.setdefault("views", ViewsStub())
        return WebhookApp(store, verify=functools.partial(verify_signature, SECRET),
                          wake=self.woken.set, clock=lambda: 1_700_000_000.0, **kw)

    def serve(self, app, listen_host: str = "127.0.0.1", **kw) -> int:
        server = make_server(listen_host, 0, app, **kw)
        serve_in_thread(self, server)
        return server.server_address[1]

    def connect(self, port: int | None = None) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=5)
        self.addCleanup(conn.close)
        return conn

    def raw_socket(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def request(self, method: str, path: str, body: bytes | None = None, headers=None, port=None):
        conn = self.connect(port)
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()

    def deliver(self, body: bytes = ISSUE_OPENED, event: str = "issues", delivery: str | None = "d-1",
                signature: str | None = None, forge: str = "Gitea", port=None):
        headers = {"Content-Type": "application/json", f"X-{forge}-Event-Type": event}
        if delivery is not None:
            headers[f"X-{forge}-Delivery"] = delivery
        headers[f"X-{forge}-Signature"] = sign(SECRET, body) if signature is None else signature
        status, _, data = self.request("POST", "/webhook", body, headers, port)
        return status, json.loads(data)


class WebhookDeliveryTest(ServerTest):
    def test_missing_or_wrong_signature_is_401_and_nothing_is_stored(self) -> None:
        with self.assertLogs("bot_bottle.orchestrator.webhook", "WARNING"):
            self.assertEqual(self.deliver(signature="")[0], 401)
            self.assertEqual(self.deliver(signature=sign(b"other-secret", ISSUE_OPENED))[0], 401)
        self.assertEqual(stored(self.store), {})
        self.assertFalse(self.woken.is_set())

    def test_hub_signature_256_is_accepted(self) -> None:
        headers = {"X-Gitea-Event-Type": "issues", "X-Gitea-Delivery": "d-hub",
                   "X-Hub-Signature-256": "sha256=" + sign(SECRET, ISSUE_OPENED)}
        status, _, data = self.request("POST", "/webhook", ISSUE_OPENED, headers)
        self.assertEqual((status, json.loads(data)), (202, {"status": "accepted"}))

    def test_body_over_one_mib_is_413_without_reading_it(self) -> None:
        sock = self.raw_socket()
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitea-Event-Type: issues\r\n"
                     b"Content-Length: 2097152\r\n\r\n" + b"{" * 1024)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        self.assertEqual(resp.status, 413)
        self.assertEqual(json.loads(resp.read())["status"], "error")
        self.assertTrue(resp.will_close)

    def test_bad_json_and_a_json_array_are_400(self) -> None:
        for body in (b"{not json", b"[1, 2]", b"\xff\xfe\x00", b"[" * 100_000):
            with self.subTest(body=body[:10]), self.assertLogs("bot_bottle.orchestrator.webhook", "WARNING"):
                status, payload = self.deliver(body)
                self.assertEqual((status, payload["status"]), (400, "error"))
        self.assertEqual(stored(self.store), {})

    def test_json_nested_deeper_than_64_is_400_with_a_reason(self) -> None:
        deep = b'{"action": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        with self.assertLogs("bot_bottle.orchestrator.webhook", "WARNING"):
            status, payload = self.deliver(deep)
        self.assertEqual((status, payload["status"]), (400, "error"))
        self.assertIn("nested deeper than 64", payload["reason"])
        self.assertEqual(stored(self.store), {})
        ok = json.dumps({"action": "opened", "t": '"[{\\' * 100,
                         "x": json.loads("[" * 63 + "]" * 63)}).encode()
        self.assertEqual(self.deliver(ok)[0], 202)

    def test_unhandled_event_type_is_202_ignored_and_not_stored(self) -> None:
        status, payload = self.deliver(event="repository")
        self.assertEqual((status, payload["status"]), (202, "ignored"))
        self.assertIn("repository", payload["reason"])
        self.assertEqual(stored(self.store), {})

    def test_injected_is_handled_widens_the_event_set(self) -> None:
        port = self.serve(self.app(self.store, is_handled=lambda e: e.startswith("pull_request")))
        status, payload = self.deliver(event="pull_request_sync", port=port)
        self.assertEqual((status, payload["status"]), (202, "accepted"))

    def test_handled_event_is_stored_then_accepted_and_wakes_the_dispatcher(self) -> None:
        status, payload = self.deliver(delivery="6ef2ce7e")
        self.assertEqual((status, payload), (202, {"status": "accepted"}))
        self.assertEqual(stored(self.store)["6ef2ce7e"], ("issues", ISSUE_OPENED, 1_700_000_000.0))
        self.assertTrue(self.woken.is_set())

    def test_an_accepted_delivery_hands_its_parse_over_and_logs_no_line_at_info(self) -> None:
        payloads = Payloads()
        port = self.serve(self.app(self.store, payloads=payloads))
        with self.assertNoLogs("bot_bottle.orchestrator", "INFO"):  # the dispatcher's is the one
            self.assertEqual(self.deliver(delivery="p-1", port=port)[0], 202)
        self.assertEqual(payloads.take("p-1", ISSUE_OPENED), json.loads(ISSUE_OPENED))
        with self.assertLogs("bot_bottle.orchestrator.webhook", "INFO") as logs:
            self.assertEqual(self.deliver(delivery="p-1", port=port)[0], 200)
        self.assertEqual(len(logs.output), 1)  # a duplicate never reaches the dispatcher
        self.assertIn("delivery=p-1 event=issues repo=", logs.output[0])
        self.assertEqual(len(payloads), 0)

    def test_same_delivery_id_again_is_200_duplicate(self) -> None:
        self.assertEqual(self.deliver(delivery="d-1")[0], 202)
        self.woken.clear()
        self.assertEqual(self.deliver(delivery="d-1"), (200, {"status": "duplicate"}))
        self.assertFalse(self.woken.is_set())

    def test_same_body_under_a_new_delivery_id_is_200_duplicate(self) -> None:
        self.assertEqual(self.deliver(delivery="d-1")[0], 202)
        self.assertEqual(self.deliver(delivery="d-2"), (200, {"status": "duplicate"}))
        self.assertEqual(list(stored(self.store)), ["d-1"])

    def test_a_comment_replayed_under_the_other_comment_event_type_is_200_duplicate(self) -> None:
        body = comment_body(comment_id=77, updated_at="2026-01-01T00:00:00Z")
        self.assertEqual(self.deliver(body, event="issue_comment", delivery="c-1")[0], 202)
        self.woken.clear()
        self.assertEqual(self.deliver(body, event="pull_request_comment", delivery="c-2"),
                         (200, {"status": "duplicate"}))
        resent = comment_body(comment_id=77, updated_at="2026-01-01T00:00:00Z", pad=" ")
        self.assertEqual(self.deliver(resent, event="pull_request_comment", delivery="c-3"),
                         (200, {"status": "duplicate"}))
        self.assertFalse(self.woken.is_set())
        self.assertEqual(list(stored(self.store)), ["c-1"])

    def test_an_edited_comment_is_a_new_delivery(self) -> None:
        self.assertEqual(self.deliver(comment_body(77, "2026-01-01T00:00:00Z"),
                                      event="issue_comment", delivery="c-1")[0], 202)
        self.assertEqual(self.deliver(comment_body(77, "2026-01-02T00:00:00Z"),
                                      event="issue_comment", delivery="c-2")[0], 202)

    def test_missing_delivery_id_falls_back_to_the_body_hash(self) -> None:
        self.assertEqual(self.deliver(delivery=None)[0], 202)
        self.assertIn(hashlib.sha256(ISSUE_OPENED).hexdigest(), stored(self.store))

    def test_store_failure_is_503_never_2xx(self) -> None:
        port = self.serve(self.app(closed_store(self)))
        with self.assertLogs("bot_bottle.orchestrator.webhook", "ERROR"):
            status, payload = self.deliver(port=port)
        self.assertEqual((status, payload), (503, {"status": "error", "reason": "store unavailable"}))
        self.assertFalse(self.woken.is_set())

    def test_a_full_disk_is_503_never_2xx(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = Path(tmp.name) / "full.db"
        SqliteRunStore(path).close()
        conn = sqlite3.connect(path)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
        store = SqliteRunStore(path, max_pages=pages)
        self.addCleanup(store.close)
        port = self.serve(self.app(store))
        body = json.dumps({"action": "opened", "pad": "x" * 200_000}).encode()
        with self.assertLogs("bot_bottle.orchestrator.webhook", "ERROR"):
            status, payload = self.deliver(body, port=port)
        self.assertEqual((status, payload["reason"]), (503, "store unavailable"))
        self.assertFalse(self.woken.is_set())

    def test_forgejo_headers_are_accepted(self) -> None:
        status, payload = self.deliver(forge="Forgejo", delivery="fj-1")
        self.assertEqual((status, payload["status"]), (202, "accepted"))
        self.assertIn("fj-1", stored(self.store))

    def test_a_recorded_gitea_delivery_replays_with_its_published_signature(self) -> None:
        body = (GITEA_DATA / "issues-opened.json").read_bytes()
        sig = "aa63f4627badfbcb501b8d7dbc57f59fb24391149430e16bdd77b454c3335656"
        status, payload = self.deliver(body, delivery="6ef2ce7e-fb08-4208-9d34-8429688f2cb0",
                                       signature=sig)
        self.assertEqual((status, payload["status"]), (202, "accepted"))


class TransportTest(ServerTest):
    def test_post_without_content_length_is_411(self) -> None:
        sock = self.raw_socket()
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        self.assertEqual(resp.status, 411)

    def test_invalid_content_length_is_400(self) -> None:
        sock = self.raw_socket()
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        self.assertEqual(resp.status, 400)

    def test_two_requests_share_one_keep_alive_connection(self) -> None:
        conn = self.connect()
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        self.assertEqual((first.status, json.loads(first.read())), (200, {"status": "ok"}))
        sock = conn.sock
        body = ISSUE_OPENED
        conn.request("POST", "/webhook", body, {"X-Gitea-Event-Type": "issues",
                                                "X-Gitea-Signature": sign(SECRET, body)})
        second = conn.getresponse()
        self.assertEqual(second.status, 202)
        second.read()
        self.assertIs(conn.sock, sock)

    def test_the_server_is_tuned_for_bursts(self) -> None:
        server = make_server("127.0.0.1", 0, self.app(self.store))
        serve_in_thread(self, server)
        self.assertGreaterEqual(server.request_queue_size, 128)
        self.assertEqual(server.handler_timeout, 10.0)
        client = socket.create_connection(server.server_address[:2], timeout=5)
        self.addCleanup(client.close)
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                       % server.server_address[1])
        resp = http.client.HTTPResponse(client)
        resp.begin()  # answered: the server has accepted the connection
        self.assertEqual(resp.status, 200)
        [accepted] = server.open_connections()
        self.assertTrue(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        self.assertTrue(server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))

    def test_a_burst_of_concurrent_deliveries_is_all_stored(self) -> None:
        results: list[int] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            body = json.dumps({"action": "opened", "number": i}).encode()
            status = self.deliver(body, delivery=f"burst-{i}")[0]
            with lock:
                results.append(status)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(64)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        self.assertEqual(results, [202] * 64)
        self.assertEqual(len(stored(self.store)), 64)

    def test_head_answers_like_get_without_a_body(self) -> None:
        conn = self.connect()
        conn.request("HEAD", "/healthz")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.read()), (200, b""))
        conn.request("GET", "/healthz")
        self.assertEqual(conn.getresponse().status, 200)

    def test_closing_the_server_cuts_idle_keep_alive_connections_at_once(self) -> None:
        server = make_server("127.0.0.1", 0, self.app(self.store))
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        conn = self.connect(server.server_address[1])
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        resp.read()  # the connection now idles, kept alive
        started = time.monotonic()
        server.shutdown()
        server.server_close()
        self.assertLess(time.monotonic() - started, 2.0)

    def test_a_stalled_client_does_not_block_another(self) -> None:
        stalled = self.raw_socket()
        stalled.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                        b"Content-Length: 1000\r\n\r\n" % self.port + b"{" * 500)
        started = time.monotonic()
        status, payload = self.deliver()
        self.assertEqual(status, 202)
        self.assertLess(time.monotonic() - started, 2.0)

    def test_a_client_that_stalls_past_the_timeout_is_dropped(self) -> None:
        port = self.serve(self.app(self.store), handler_timeout=0.3)
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     b"Content-Length: 1000\r\n\r\n{" % port)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        self.assertEqual((resp.status, resp.will_close), (408, True))

    def test_a_client_trickling_its_headers_is_cut_off(self) -> None:
        port = self.serve(self.app(self.store), handler_timeout=0.5)
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /webhook HTTP/1.1\r\n")
        stop = threading.Event()

        def trickle() -> None:  # one header byte every 0.1 s: never idle for a whole timeout
            while not stop.wait(0.1):
                try:
                    sock.sendall(b"X")
                except OSError:
                    return

        thread = threading.Thread(target=trickle)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)
        started = time.monotonic()
        try:
            data = sock.recv(1024)
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"")
        self.assertLess(time.monotonic() - started, 2.5)

    def test_an_app_that_raises_is_answered_500_json(self) -> None:
        class Exploding:
            def handle(self, *args):
                raise RuntimeError("boom")

        port = self.serve(Exploding())
        with self.assertLogs("bot_bottle.orchestrator.http_server", "ERROR"):
            status, ctype, data = self.request("GET", "/", port=port)
        self.assertEqual((status, ctype, json.loads(data)["status"]), (500, "application/json", "error"))


class RoutesTest(ServerTest):
    def test_healthz_is_ok_when_the_store_answers_and_503_when_not(self) -> None:
        self.assertEqual(self.request("GET", "/healthz")[0], 200)
        port = self.serve(self.app(closed_store(self)))
        with self.assertLogs("bot_bottle.orchestrator.webhook", "WARNING"):
            status, _, data = self.request("GET", "/healthz", port=port)
        self.assertEqual((status, json.loads(data)["status"]), (503, "error"))

    def test_unknown_route_is_404_and_wrong_method_is_405(self) -> None:
        status, ctype, data = self.request("GET", "/nope")
        self.assertEqual((status, ctype, json.loads(data)["status"]), (404, "application/json", "error"))
        conn = self.connect()
        conn.request("GET", "/webhook")
        resp = conn.getresponse()
        self.assertEqual((resp.status, resp.getheader("Allow")), (405, "POST"))
        resp.read()
        self.assertEqual(self.request("DELETE", "/runs")[0], 405)

    def test_dashboard_is_html(self) -> None:
        status, ctype, data = self.request("GET", "/")
        self.assertEqual((status, ctype), (200, "text/html; charset=utf-8"))
        self.assertIn(b"7 running", data)

    def test_runs_and_one_run_are_json(self) -> None:
        status, _, data = self.request("GET", "/runs")
        self.assertEqual((status, json.loads(data)), (200, [{"id": 7, "state": "running"}]))
        self.assertEqual(len(json.loads(self.request("GET", "/runs?all=1")[2])), 2)
        status, _, data = self.request("GET", "/runs/7")
        self.assertEqual((status, json.loads(data)["state"]), (200, "running"))
        status, _, data = self.request("GET", "/runs/7/provenance")
        self.assertEqual((status, json.loads(data)["ops"]), (200, []))

    def test_unknown_run_is_404_and_a_non_integer_id_is_400(self) -> None:
        self.assertEqual(self.request("GET", "/runs/8")[0], 404)
        self.assertEqual(self.request("GET", "/runs/8/provenance")[0], 404)
        self.assertEqual(self.request("GET", "/runs/abc")[0], 400)
        self.assertEqual(self.request("GET", "/runs/-1/provenance")[0], 400)

    def test_metrics_are_prometheus_text(self) -> None:
        status, ctype, data = self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"))
        self.assertIn(b'bot_bottle_runs{state="running"} 1', data)

    def test_a_failing_view_is_503_not_500(self) -> None:
        class BrokenViews(ViewsStub):
            def runs(self, include_destroyed=False):
                raise OSError("database is locked")

        port = self.serve(self.app(self.store, views=BrokenViews()))
        with self.assertLogs("bot_bottle.orchestrator.webhook", "ERROR"):
            self.assertEqual(self.request("GET", "/runs", port=port)[0], 503)


class HostAndHeadersTest(ServerTest):
    def status_for_host(self, host: str | None, port: int | None = None) -> tuple[int, dict]:
        sock = socket.create_connection(("127.0.0.1", port or self.port), timeout=5)
        self.addCleanup(sock.close)
        head = b"GET /runs HTTP/1.1\r\n" + (b"Host: %s\r\n" % host.encode() if host else b"")
        sock.sendall(head + b"Connection: close\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, json.loads(resp.read())

    def test_a_host_other_than_the_listen_address_is_421_with_a_reason(self) -> None:
        for host in ("evil.example", f"evil.example:{self.port}", "127.0.0.1:1", "localhost:1",
                     None):
            with self.subTest(host=host), self.assertLogs("bot_bottle.orchestrator.http_server",
                                                          "WARNING"):
                status, payload = self.status_for_host(host)
                self.assertEqual(status, 421)
                self.assertIn("Host", payload["reason"])
        self.assertEqual(self.status_for_host(f"127.0.0.1:{self.port}")[0], 200)

    def test_allowed_hosts_admit_a_reverse_proxy_s_names(self) -> None:
        port = self.serve(self.app(self.store), allowed_hosts=("bots.example.com", "proxy:8443"))
        for host in ("bots.example.com", "BOTS.example.com:9", "proxy:8443",
                     f"127.0.0.1:{port}"):
            with self.subTest(host=host):
                self.assertEqual(self.status_for_host(host, port)[0], 200)
        with self.assertLogs("bot_bottle.orchestrator.http_server", "WARNING"):
            self.assertEqual(self.status_for_host("proxy:80", port)[0], 421)

    def test_a_wildcard_listener_admits_loopback_names_only(self) -> None:
        port = self.serve(self.app(self.store), listen_host="0.0.0.0")
        self.assertEqual(self.status_for_host(f"localhost:{port}", port)[0], 200)
        with self.assertLogs("bot_bottle.orchestrator.http_server", "WARNING"):
            self.assertEqual(self.status_for_host(f"0.0.0.0:{port}", port)[0], 421)

    def test_html_gets_a_strict_policy_and_every_answer_nosniff(self) -> None:
        conn = self.connect()
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        self.assertEqual(resp.getheader("X-Content-Type-Options"), "nosniff")
        self.assertEqual(resp.getheader("X-Frame-Options"), "DENY")
        csp = resp.getheader("Content-Security-Policy")
        self.assertIn("default-src 'none'", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        for method, path in (("GET", "/runs"), ("GET", "/healthz"), ("POST", "/webhook"),
                             ("GET", "/nowhere")):
            with self.subTest(path=path):
                conn.request(method, path, body=b"{}" if method == "POST" else None)
                resp = conn.getresponse()
                resp.read()
                self.assertEqual(resp.getheader("X-Content-Type-Options"), "nosniff")
                self.assertIsNone(resp.getheader("Content-Security-Policy"))


class StoreViewsTest(ServerTest):
    """The read-only pages from the real store and the real renderers."""

    def setUp(self) -> None:
        super().setUp()
        run = self.store.create_run("acme", "widgets", 42, "claude", ["default"], RunState.QUEUED,
                                    "tok-secret-1", now=1_699_999_000.0,
                                    launch_prompt="launch-prompt-text " * 1000)
        self.store.transition(run.id, RunState.STARTING, now=1_699_999_500.0, reason="launch",
                              pending_prompt="remembered-comment-text")
        self.run_id = run.id
        self.port = self.serve(WebhookApp(self.store, verify=functools.partial(verify_signature, SECRET),
                                          clock=lambda: 1_700_000_000.0))

    def get(self, path: str):
        status, ctype, data = self.request("GET", path)
        self.assertNotIn(b"tok-secret-1", data)
        # the prompts the run keeps are no view's business (and up to 1 MiB each)
        self.assertNotIn(b"launch-prompt-text", data)
        self.assertNotIn(b"remembered-comment-text", data)
        return status, ctype, data

    def test_dashboard_lists_the_run_with_its_last_op(self) -> None:
        status, ctype, data = self.get("/")
        self.assertEqual((status, ctype), (200, "text/html; charset=utf-8"))
        self.assertIn(b"acme/widgets#42", data)
        self.assertIn(b"starting", data)

    def test_runs_and_one_run_come_from_the_store(self) -> None:
        status, _, data = self.get("/runs")
        self.assertEqual(status, 200)
        doc = json.loads(data)
        self.assertEqual(doc["version"], 2)
        self.assertEqual([(r["id"], r["state"]) for r in doc["runs"]], [(self.run_id, "starting")])
        status, _, data = self.get(f"/runs/{self.run_id}")
        one = json.loads(data)
        self.assertEqual((status, one["version"]), (200, 2))
        # in `starting` since its transition at 1_699_999_500, answered at 1_700_000_000
        self.assertEqual((one["at"], one["run"]["state_since"]),
                         ("2023-11-14T22:13:20Z", "2023-11-14T22:05:00Z"))
        self.assertEqual(one["run"], doc["runs"][0])
        self.assertEqual(self.get("/runs/999")[0], 404)

    def test_provenance_is_the_op_log_oldest_first(self) -> None:
        status, _, data = self.get(f"/runs/{self.run_id}/provenance")
        self.assertEqual(status, 200)
        prov = json.loads(data)
        ops = prov["ops"]
        self.assertEqual((prov["version"], prov["run"]["id"]), (2, self.run_id))
        self.assertEqual((ops[0]["kind"], ops[0]["at"]), ("created", "2023-11-14T21:56:40Z"))
        self.assertEqual(len(ops), len(self.store.op_log(self.run_id)))
        self.assertEqual(self.get("/runs/999/provenance")[0], 404)

    def test_metrics_count_runs_by_state_and_deliveries(self) -> None:
        self.assertEqual(self.deliver()[0], 202)
        status, _, data = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b'bot_bottle_runs{state="starting"} 1', data)
        # pending is a gauge, never a series of the outcome counter
        self.assertIn(b"\nbot_bottle_deliveries_pending 1\n", data)
        self.assertNotIn(b'outcome="pending"', data)
        self.store.mark_delivery_processed(self.store.pending_deliveries(1)[0].seq, "launched")
        data = self.get("/metrics")[2]
        self.assertIn(b"\nbot_bottle_deliveries_pending 0\n", data)
        self.assertIn(b'bot_bottle_deliveries_total{outcome="launched"} 1', data)


class AppWithoutSocketsTest(unittest.TestCase):
    def test_header_lookups_ignore_case(self) -> None:
        store = open_store(self)
        app = WebhookApp(store, verify=functools.partial(verify_signature, SECRET), views=ViewsStub())
        headers = {"x-gitea-event-type": "issues", "X-GITEA-SIGNATURE": sign(SECRET, ISSUE_OPENED),
                   "X-Gitea-Delivery": "d-9"}
        response = app.handle("POST", "/webhook", headers, ISSUE_OPENED)
        self.assertEqual(response.status, 202)
        self.assertIn("d-9", stored(store))

    def test_no_input_gives_a_5xx_other_than_503(self) -> None:
        app = WebhookApp(open_store(self), verify=lambda body, sig: 1 / 0, views=object())
        with self.assertLogs("bot_bottle.orchestrator.webhook", "ERROR"):
            for method, path in [("POST", "/webhook"), ("GET", "/"), ("GET", "/runs/1"),
                                 ("GET", "/metrics"), ("PUT", "/x?y=%zz")]:
                response = app.handle(method, path, {"X-Gitea-Signature": "ab"}, b"{}")
                self.assertTrue(response.status < 500 or response.status == 503, (method, path))


if __name__ == "__main__":
    unittest.main()
