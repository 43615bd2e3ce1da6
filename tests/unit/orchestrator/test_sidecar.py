"""The sidecar: HTTP over a real Unix socket, a FakeForge behind a ScopedForge, done files."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import unittest
from pathlib import Path

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.sidecar import SidecarApp, SidecarServer
from tests.support.fake_forge import FakeForge
from tests._serve import serve_in_thread

from ._fakes import FakeClock, UnixConnection, seed_run, temp_store


class SidecarTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.forge = FakeForge("acme", "widgets")
        self.issue_n = self.forge.add_issue("Fix empty input", "crashes", user="alice")
        self.other_n = self.forge.add_issue("Unrelated", "", user="alice")
        self.store = temp_store(self)
        self.run_record = seed_run(self.store, self.issue_n, RunState.RUNNING, run_token="tok-7",
                                   run_id=7)
        self.clock = FakeClock()
        app = SidecarApp(self.store, lambda o, r: self.forge, self.dir / "queue",
                         self.clock.now, lambda: 123)
        self.sock = str(self.dir / "s.sock")
        server = SidecarServer(Path(self.sock), app)
        serve_in_thread(self, server)

    def call(self, method: str, path: str, body=None, token: str | None = "tok-7"):
        conn = UnixConnection(self.sock)
        self.addCleanup(conn.close)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    def test_the_socket_is_private_to_the_services_user(self) -> None:
        # bwrap bottles are this uid in a user namespace; no other local user may connect
        self.assertEqual(os.stat(self.sock).st_mode & 0o777, 0o600)

    def test_missing_or_unknown_token_is_401(self) -> None:
        self.assertEqual(self.call("GET", f"/issues/{self.issue_n}", token=None)[0], 401)
        self.assertEqual(self.call("GET", f"/issues/{self.issue_n}", token="nope")[0], 401)

    def test_reads_work_anywhere_and_count_as_progress(self) -> None:
        status, payload = self.call("GET", f"/issues/{self.other_n}")
        self.assertEqual((status, payload["title"]), (200, "Unrelated"))
        self.assertEqual(self.store.get_run(7).last_progress_at, self.clock.now())
        self.assertEqual(self.store.op_log(7)[-1].kind, "sidecar.read_issue")

    def test_writes_outside_the_run_issue_are_403_and_logged(self) -> None:
        status, payload = self.call("POST", f"/issues/{self.other_n}/comments", {"body": "hi"})
        self.assertEqual((status, payload["status"]), (403, "error"))
        self.assertEqual(self.store.op_log(7)[-1].detail["status"], 403)

    def test_comment_on_own_issue_is_posted(self) -> None:
        status, payload = self.call("POST", f"/issues/{self.issue_n}/comments", {"body": "hello"})
        self.assertEqual((status, payload["body"]), (201, "hello"))
        self.assertIn("hello", [c.body for c in self.forge.read_comments(self.issue_n)])

    def test_opened_pr_becomes_the_run_pr_and_joins_its_scope(self) -> None:
        status, pr = self.call("POST", "/pulls", {"title": "Fix", "body": "b", "head": "fix", "base": "main"})
        self.assertEqual(status, 201)
        self.assertEqual(self.store.get_run(7).pr_number, pr["number"])
        self.assertEqual(self.call("PATCH", f"/issues/{pr['number']}", {"body": "new"})[0], 200)

    def test_every_pr_the_run_opened_stays_in_scope_and_the_latest_is_the_runs(self) -> None:
        _, first = self.call("POST", "/pulls", {"title": "A", "body": "", "head": "a", "base": "main"})
        _, second = self.call("POST", "/pulls", {"title": "B", "body": "", "head": "b", "base": "main"})
        self.assertEqual(self.store.get_run(7).pr_number, second["number"])
        for pr in (first, second):
            status, _ = self.call("POST", f"/issues/{pr['number']}/comments", {"body": "still mine"})
            self.assertEqual(status, 201, pr["number"])
        self.assertEqual(self.call("POST", f"/issues/{self.other_n}/comments", {"body": "x"})[0], 403)

    def test_bad_json_or_shape_is_400_and_unknown_route_404(self) -> None:
        self.assertEqual(self.call("POST", "/done", {"status": "maybe", "summary": ""})[0], 400)
        self.assertEqual(self.call("POST", f"/issues/{self.issue_n}/comments", {"body": 3})[0], 400)
        self.assertEqual(self.call("GET", "/nowhere")[0], 404)

    def test_done_writes_one_json_file_into_the_queue(self) -> None:
        status, payload = self.call("POST", "/done", {"status": "done", "summary": "opened PR"})
        self.assertEqual((status, payload), (202, {"status": "accepted"}))
        files = list((self.dir / "queue").iterdir())
        self.assertEqual(len(files), 1)
        self.assertTrue(files[0].name.startswith("00000000000000000123-7-"))
        self.assertEqual(json.loads(files[0].read_text()),
                         {"run_id": 7, "status": "done", "summary": "opened PR"})


    def call_raw(self, method: str, path: str, data: bytes):
        conn = UnixConnection(self.sock)
        self.addCleanup(conn.close)
        conn.request(method, path, body=data, headers={"Authorization": "Bearer tok-7"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    def test_json_nested_100k_deep_is_400_with_a_reason(self) -> None:
        deep = b'{"status": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        status, payload = self.call_raw("POST", "/done", deep)
        self.assertEqual((status, payload["status"]), (400, "error"))
        self.assertIn("nested deeper than 64", payload["reason"])
        self.assertFalse((self.dir / "queue").exists())
        # a string holding brackets is not nesting; 64 levels is still fine
        ok = json.dumps({"status": "done", "summary": "[" * 1000,
                         "x": json.loads("[" * 63 + "]" * 63)}).encode()
        self.assertEqual(self.call_raw("POST", "/done", ok)[0], 202)

    def test_bad_content_length_is_400_not_a_hang(self) -> None:
        for value in ("-5", "abc"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.settimeout(5)
                raw.connect(self.sock)
                raw.sendall(f"POST /done HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-7\r\n"
                            f"Content-Length: {value}\r\n\r\n".encode())
                self.assertTrue(raw.recv(4096).startswith(b"HTTP/1.1 400"), value)
        self.assertFalse((self.dir / "queue").exists())



class SidecarLimitsTest(unittest.TestCase):
    """The transport's bounds: one deadline per request, a cap on connections in total."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.store = temp_store(self)
        forge = FakeForge("acme", "widgets")
        seed_run(self.store, forge.add_issue("Fix", "", user="alice"), RunState.RUNNING,
                 run_token="tok-7", run_id=7)
        self.app = SidecarApp(self.store, lambda o, r: forge,
                              self.dir / "queue", FakeClock().now, lambda: 123)

    def serve(self, **kw) -> tuple[SidecarServer, str]:
        path = str(self.dir / f"s{len(list(self.dir.glob('*.sock')))}.sock")
        server = SidecarServer(Path(path), self.app, **kw)
        serve_in_thread(self, server)
        return server, path

    def connect(self, path: str) -> socket.socket:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(raw.close)
        raw.settimeout(10)
        raw.connect(path)
        return raw

    def test_a_request_that_never_completes_is_cut_at_its_deadline_not_per_read(self) -> None:
        server, path = self.serve(request_deadline=0.3)
        self.assertGreaterEqual(server.read_timeout, 30)  # a per-read limit alone would wait
        for partial in (b"POST /done HTTP/1.1\r\nAuthor",  # a head that never ends
                        b"POST /done HTTP/1.1\r\nAuthorization: Bearer tok-7\r\n"
                        b"Content-Length: 100\r\n\r\n{\"status\""):  # a body that never ends
            with self.subTest(partial=partial[-12:]):
                raw = self.connect(path)
                raw.sendall(partial)
                started = time.monotonic()
                answer = b"".join(iter(lambda: raw.recv(4096), b""))  # to the close
                self.assertLess(time.monotonic() - started, 5)
                # a head that never ends is cut unanswered, a late body gets its 408
                self.assertIn(answer[:12], (b"", b"HTTP/1.1 408"), answer[:40])
                self.assertEqual(answer == b"", partial.endswith(b"Author"))
        self.assertFalse((self.dir / "queue").exists())

    def test_connections_beyond_the_total_cap_are_answered_503_at_once(self) -> None:
        server, path = self.serve(max_connections=2)
        held = [self.connect(path) for _ in range(2)]
        for raw in held:
            raw.sendall(b"GET /issues/1 HTTP/1.1\r\n")  # still sending its head
        with self.assertLogs("bot_bottle.orchestrator.sidecar", "WARNING") as logs:
            extra = self.connect(path)
            answer = extra.recv(4096)
        self.assertIn("refused a connection", logs.output[0])
        self.assertTrue(answer.startswith(b"HTTP/1.1 503"), answer[:40])
        self.assertIn(b"too many connections", answer)
        held[0].close()
        deadline = time.monotonic() + 5
        while server.active_connections() > 1:  # the held one's handler has ended
            self.assertLess(time.monotonic(), deadline, "the closed connection was not freed")
            time.sleep(0.01)
        conn = UnixConnection(path)
        self.addCleanup(conn.close)
        conn.request("GET", "/issues/1", headers={"Authorization": "Bearer tok-7"})
        self.assertEqual(conn.getresponse().status, 200)


if __name__ == "__main__":
    unittest.main()
