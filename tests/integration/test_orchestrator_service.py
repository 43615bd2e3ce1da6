"""`python -m bot_bottle.orchestrator run` as systemd runs it: `Type=notify` datagrams
(READY=1, WATCHDOG=1 with STATUS= at half of WATCHDOG_USEC, STOPPING=1) on `NOTIFY_SOCKET`; SIGTERM lets
an in-flight request finish and exits 0; a restart on the same DB serves what it stored.
Uses the fake core CLI: no bottle is needed here."""

from __future__ import annotations

import socket
import sqlite3
import tempfile
import threading
import unittest
from pathlib import Path

from tests.integration._in_flight import start_delivery
from tests.integration._orchestrator import FAKE_CLI, OrchestratorProcess, make_fake_home, \
    make_forge


class ServiceTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.home = make_fake_home(self.root)
        self.gitea = make_forge(self)
        self.notify_path = self.root / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(self.notify.close)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(10)
        self.orch = OrchestratorProcess(self.home, self.gitea.url, cli=FAKE_CLI, extra_env={
            "NOTIFY_SOCKET": str(self.notify_path), "WATCHDOG_USEC": "200000"})
        self.addCleanup(self.orch.cleanup)

    def messages_until(self, wanted: str) -> list[str]:
        """The datagrams' lines (a ping is `WATCHDOG=1` and `STATUS=...`) up to `wanted`."""
        seen: list[str] = []
        while wanted not in seen:
            seen.extend(self.notify.recv(256).decode().splitlines())
        return seen

    def test_notify_ready_watchdog_stopping_and_sigterm_exits_0(self) -> None:
        self.orch.start()
        self.assertEqual(self.messages_until("READY=1")[-1], "READY=1")
        ping = self.messages_until("WATCHDOG=1")
        self.assertIn("WATCHDOG=1", ping)
        self.assertEqual(self.notify.recv(256).decode().splitlines(),  # the next ping
                         ["WATCHDOG=1", "STATUS=0 running, 0 frozen, 0 queued"])
        self.assertEqual(self.orch.stop(), 0)
        self.assertIn("STOPPING=1", self.messages_until("STOPPING=1"))

    def test_sigterm_finishes_an_in_flight_request(self) -> None:
        self.orch.start()
        self.messages_until("READY=1")
        # another writer holds the store, so the delivery stays in the service's hands until
        # the lock is released (below), after the service has begun to stop
        other = sqlite3.connect(self.orch.db_path, isolation_level=None, timeout=1)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        body = b'{"action": "opened"}'
        conn = start_delivery(self.orch.port, self.orch.secret, "issues", body,
                              delivery_id="in-flight")
        self.addCleanup(conn.close)
        stopper = threading.Thread(target=self.orch.stop)
        stopper.start()
        self.messages_until("STOPPING=1")  # SIGTERM is being handled, the request is open
        other.execute("ROLLBACK")
        answer = conn.getresponse()
        stopper.join(20)
        self.assertFalse(stopper.is_alive())
        self.assertEqual((answer.status, answer.read()), (202, b'{"status": "accepted"}'))
        self.assertEqual(self.orch.returncode, 0)
        stored = other.execute("SELECT delivery_id FROM deliveries").fetchall()
        self.assertEqual(stored, [("in-flight",)])  # acknowledged means stored

    def test_restart_on_the_same_db_keeps_what_was_acknowledged(self) -> None:
        self.orch.start()
        status, _ = self.orch.deliver("issues", "issues", b'{"action": "edited"}',
                                      delivery_id="keep-me")
        self.assertEqual(status, 202)
        self.assertEqual(self.orch.stop(), 0)
        self.orch.start()
        status, body = self.orch.deliver("issues", "issues", b'{"action": "edited"}',
                                         delivery_id="keep-me")
        self.assertEqual((status, body), (200, b'{"status": "duplicate"}'))


if __name__ == "__main__":
    unittest.main()
