"""The webhook port's durable ack without a waiting thread: the store writer's `submit_async`
and `record_delivery_async` (callback once the group is committed) on real SQLite files, and
over a real socket the 2xx that comes only after the writer's callback, never before."""

from __future__ import annotations

import functools
import json
import select
import socket
import sqlite3
import tempfile
import threading
import unittest
from pathlib import Path

from bot_bottle.contrib.gitea.signature import sign, verify_signature
from bot_bottle.orchestrator.events import Payloads
from bot_bottle.orchestrator.store import SqliteRunStore, StoreError
from bot_bottle.orchestrator.webhook import WebhookApp, make_server
from tests._serve import serve_in_thread

from .test_http_loop import read_answer
from .test_webhook import ISSUE_OPENED, SECRET, ViewsStub


class StoreCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.path = Path(tmp.name) / "orchestrator.db"
        self.store = SqliteRunStore(self.path)
        self.addCleanup(self.store.close)

    def committed_ids(self) -> list[str]:
        """Delivery ids another connection sees: what is durable, not what is in flight."""
        conn = sqlite3.connect(self.path)
        try:
            return [r[0] for r in conn.execute("SELECT delivery_id FROM deliveries ORDER BY seq")]
        finally:
            conn.close()

    def hold_writer(self) -> threading.Event:
        """Hold the writer thread inside a job of its own until the returned event is set."""
        writer = self.store._deliveries._writer
        started, gate = threading.Event(), threading.Event()

        def block(conn) -> None:
            started.set()
            gate.wait(30)
        writer.submit_async(block, lambda result, error: None)
        self.addCleanup(gate.set)
        self.assertTrue(started.wait(10))
        return gate


class SubmitAsyncTest(StoreCase):
    def record(self, delivery_id: str, body: bytes = b"{}"):
        """`record_delivery_async`; returns an event set by its callback and what it got."""
        got: dict = {}
        done = threading.Event()

        def callback(fresh, error) -> None:
            got.update(fresh=fresh, error=error, seen=self.committed_ids(),
                       thread=threading.current_thread().name)
            done.set()
        self.store.record_delivery_async(delivery_id, "issues", body, 1.0, callback=callback)
        return done, got

    def test_the_callback_comes_after_the_commit_with_the_result(self) -> None:
        done, got = self.record("a")
        self.assertTrue(done.wait(10))
        self.assertEqual((got["fresh"], got["error"], got["seen"], got["thread"]),
                         (True, None, ["a"], "store-writer"))  # durable when called back
        again, got = self.record("a")
        self.assertTrue(again.wait(10))
        self.assertEqual((got["fresh"], got["error"]), (False, None))  # a duplicate

    def test_many_at_once_share_one_commit(self) -> None:
        gate = self.hold_writer()
        before = self.store.commit_count
        waits = [self.record(f"d{i}", b'{"n": %d}' % i) for i in range(20)]
        self.assertEqual(self.committed_ids(), [])  # nothing is durable while held
        gate.set()
        for done, got in waits:
            self.assertTrue(done.wait(10))
            self.assertEqual((got["fresh"], got["error"]), (True, None))
        self.assertEqual(self.store.commit_count - before, 2)  # the held job's, then all 20

    def test_a_failed_write_calls_back_with_the_error_and_others_still_commit(self) -> None:
        writer = self.store._deliveries._writer
        gate = self.hold_writer()
        failed: list = []
        bad_done = threading.Event()

        def bad(conn) -> None:
            conn.execute("INSERT INTO no_such_table VALUES (1)")

        writer.submit_async(bad, lambda result, error: (failed.append(error), bad_done.set()))
        good_done, got = self.record("good")
        gate.set()
        self.assertTrue(bad_done.wait(10) and good_done.wait(10))
        self.assertIsInstance(failed[0], StoreError)
        self.assertEqual((got["fresh"], got["error"]), (True, None))

    def test_a_callback_that_raises_does_not_stop_the_writer(self) -> None:
        with self.assertLogs("bot_bottle.orchestrator.store", "ERROR"):
            self.store.record_delivery_async("a", "issues", b"{}", 1.0,
                                             callback=lambda fresh, error: 1 / 0)
            self.assertTrue(self.store.record_delivery("b", "issues", b"[]", 1.0))
        self.assertEqual(self.committed_ids(), ["a", "b"])

    def test_a_closed_store_refuses_at_once_and_never_calls_back(self) -> None:
        self.store.close()
        called: list = []
        with self.assertRaises(StoreError):
            self.store.record_delivery_async("a", "issues", b"{}", 1.0,
                                             callback=lambda *a: called.append(a))
        self.assertEqual(called, [])
        again = SqliteRunStore(self.path)
        self.addCleanup(again.close)
        with self.assertRaises(ValueError):  # checked before anything is queued
            again.record_delivery_async("a", "", b"{}", 1.0, callback=called.append)
        self.assertEqual(called, [])


class DurableAckTest(StoreCase):
    def setUp(self) -> None:
        super().setUp()
        self.woken = threading.Event()
        app = WebhookApp(self.store, verify=functools.partial(verify_signature, SECRET),
                         wake=self.woken.set, views=ViewsStub(), clock=lambda: 1_700_000_000.0)
        server = make_server("127.0.0.1", 0, app)
        serve_in_thread(self, server)
        self.port = server.server_address[1]

    def send_delivery(self, delivery: str) -> socket.socket:
        body = ISSUE_OPENED
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % self.port
                     + b"X-Gitea-Event-Type: issues\r\nX-Gitea-Delivery: %s\r\n" % delivery.encode()
                     + b"X-Gitea-Signature: %s\r\n" % sign(SECRET, body).encode()
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return sock

    def test_no_answer_until_the_writer_has_committed_the_delivery(self) -> None:
        gate = self.hold_writer()
        sock = self.send_delivery("held-1")
        readable, _, _ = select.select([sock], [], [], 0.3)
        self.assertEqual(readable, [], "answered before the delivery was durable")
        self.assertEqual(self.committed_ids(), [])
        self.assertFalse(self.woken.is_set())
        gate.set()
        status, _, body = read_answer(sock, bytearray())
        self.assertEqual((status, json.loads(body)), (202, {"status": "accepted"}))
        self.assertEqual(self.committed_ids(), ["held-1"])  # durable before the 202 was sent
        self.assertTrue(self.woken.is_set())

    def test_other_connections_are_served_while_a_delivery_waits_for_the_disk(self) -> None:
        gate = self.hold_writer()
        waiting = self.send_delivery("held-2")
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as other:
            other.sendall(b"GET /runs HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % self.port)
            self.assertEqual(read_answer(other, bytearray())[0], 200)
        gate.set()
        self.assertEqual(read_answer(waiting, bytearray())[0], 202)


class PayloadHandOverTest(StoreCase):
    """The parsed body goes to the dispatcher (`events.Payloads`) before the row can be
    committed: put after the commit, it came too late for a dispatcher that read the row at
    once, was never taken, and 256 of them stayed in memory after every delivery was done."""

    def setUp(self) -> None:
        super().setUp()
        self.payloads = Payloads()
        self.taken: list = []
        store, payloads, taken = self.store, self.payloads, self.taken

        class AtCommit:  # the store, and a dispatcher that reads each new row at its commit
            def __getattr__(self, name):
                return getattr(store, name)

            def record_delivery_async(self, delivery_id, event, body, *args, callback, **kw):
                def committed(fresh, error) -> None:
                    if fresh:
                        taken.append(payloads.take(delivery_id, body))
                    callback(fresh, error)
                store.record_delivery_async(delivery_id, event, body, *args, callback=committed,
                                            **kw)
        self.app = WebhookApp(AtCommit(), verify=functools.partial(verify_signature, SECRET),
                              views=ViewsStub(), payloads=self.payloads,
                              clock=lambda: 1_700_000_000.0)
        server = make_server("127.0.0.1", 0, self.app)
        serve_in_thread(self, server)
        self.port = server.server_address[1]

    def deliver(self, delivery: str) -> int:
        body = ISSUE_OPENED
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % self.port
                         + b"X-Gitea-Event-Type: issues\r\nX-Gitea-Delivery: %s\r\n"
                         % delivery.encode()
                         + b"X-Gitea-Signature: %s\r\n" % sign(SECRET, body).encode()
                         + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            return read_answer(sock, bytearray())[0]

    def test_the_parsed_body_is_there_when_its_row_is_committed(self) -> None:
        self.assertEqual(self.deliver("p-1"), 202)
        self.assertEqual(self.taken, [json.loads(ISSUE_OPENED)])  # not parsed again
        self.assertEqual(len(self.payloads), 0)

    def test_a_duplicate_or_a_failed_insert_leaves_nothing_behind(self) -> None:
        self.assertEqual(self.deliver("p-2"), 202)
        self.assertEqual(self.deliver("p-2"), 200)  # a duplicate: no row for the dispatcher
        self.assertEqual(len(self.payloads), 0)
        self.store.close()
        with self.assertLogs("bot_bottle.orchestrator.webhook", "ERROR"):
            self.assertEqual(self.deliver("p-3"), 503)
        self.assertEqual(len(self.payloads), 0)


if __name__ == "__main__":
    unittest.main()
