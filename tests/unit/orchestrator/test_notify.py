"""sd_notify over a real datagram socket, path and abstract addresses."""

from __future__ import annotations

import os
import socket
import tempfile
import unittest

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.notify import Heartbeats, Notifier, keepalive

from ._fakes import FakeClock, seed_run, temp_store


class NotifierTest(unittest.TestCase):
    def listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(5)
        return sock

    def test_ready_reaches_a_path_socket(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        path = os.path.join(tmp.name, "notify")
        sock = self.listen(path)
        self.assertTrue(Notifier(path).notify("READY=1"))
        self.assertEqual(sock.recv(100), b"READY=1")

    def test_abstract_address_with_at_sign_is_supported(self) -> None:
        name = f"bot-bottle-test-{os.getpid()}-{id(self)}"
        sock = self.listen("\0" + name)
        self.assertTrue(Notifier("@" + name).notify("WATCHDOG=1"))
        self.assertEqual(sock.recv(100), b"WATCHDOG=1")

    def test_without_notify_socket_nothing_is_sent(self) -> None:
        self.assertFalse(Notifier(None).notify("READY=1"))


class KeepaliveTest(unittest.TestCase):
    """The watchdog ping, with the run counts, goes out only while the store answers and every
    loop has beaten lately; else only the status saying why."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.sock.close)
        self.path = os.path.join(tmp.name, "notify")
        self.sock.bind(self.path)
        self.sock.settimeout(5)
        self.store = temp_store(self)
        for issue, state in enumerate((RunState.RUNNING, RunState.STARTING, RunState.FROZEN,
                                       RunState.TIMED_OUT, RunState.QUEUED, RunState.FAILED)):
            seed_run(self.store, issue + 1, state)
        self.clock = FakeClock(100.0)
        self.beats = Heartbeats(self.clock.now)
        for name, period in (("dispatcher", 2.0), ("relay", 0.5), ("watchdog", 30.0)):
            self.beats.expect(name, period)

    def ping(self) -> tuple[bool, str]:
        sent = keepalive(Notifier(self.path), self.store, self.beats, grace=15.0)
        return sent, self.sock.recv(1000).decode()

    def test_all_loops_recent_send_the_watchdog_ping_with_the_counts(self) -> None:
        self.clock.advance(10)
        self.beats.beat("dispatcher")
        self.assertEqual(self.ping(), (True, "WATCHDOG=1\nSTATUS=2 running, 2 frozen, 1 queued"))

    def test_a_loop_that_stopped_beating_withholds_the_ping_and_says_which(self) -> None:
        self.beats.beat("relay")
        self.clock.advance(18)  # past the dispatcher's 2 s pass and 15 s grace
        self.beats.beat("relay")
        with self.assertLogs("bot_bottle.orchestrator.notify", "ERROR") as logs:
            self.assertEqual(self.ping(), (False, "STATUS=stalled: dispatcher; "
                                                  "2 running, 2 frozen, 1 queued"))
        self.assertIn("no progress in dispatcher", logs.output[0])

    def test_a_store_that_does_not_answer_withholds_the_ping(self) -> None:
        self.store.close()
        with self.assertLogs("bot_bottle.orchestrator.notify", "ERROR"):
            self.assertEqual(self.ping(), (False, "STATUS=the database does not answer"))

    def test_without_a_socket_nothing_is_sent_and_health_is_still_told(self) -> None:
        self.assertTrue(keepalive(Notifier(None), self.store, self.beats, grace=15.0))


if __name__ == "__main__":
    unittest.main()
