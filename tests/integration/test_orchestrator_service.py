"""`python -m bot_bottle.orchestrator run` as systemd runs it: `Type=notify` datagrams
(READY=1, WATCHDOG=1 with STATUS= at half of WATCHDOG_USEC, STOPPING=1) on `NOTIFY_SOCKET`; SIGTERM lets
an in-flight request finish and exits 0; a restart on the same DB serves what it stored.
Uses the fake core CLI: no bottle is needed here."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
import unittest
from pathlib import Path

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
        conn = socket.create_connection(("127.0.0.1", self.orch.port), timeout=10)
        self.addCleanup(conn.close)
        body = b'{"action": "opened"}'
        head = (f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1:{self.orch.port}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "X-Gitea-Event-Type: issues\r\nX-Gitea-Signature: 00\r\n\r\n").encode()
        conn.sendall(head)  # the request is in flight: its body has not arrived yet
        time.sleep(0.2)
        stopper = threading.Thread(target=self.orch.stop)
        stopper.start()
        time.sleep(0.3)
        conn.sendall(body)
        answer = conn.recv(4096).decode()
        stopper.join(20)
        self.assertTrue(answer.startswith("HTTP/1.1 401"), answer)  # answered, not cut off
        self.assertEqual(self.orch.returncode, 0)

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
