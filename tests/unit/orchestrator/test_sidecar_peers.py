"""The sidecar's cap per bottle: a connection is counted under the direct child of the service
it descends from (`peers`), so one bottle's flood of token-less connections leaves the others
their share of the socket. Real processes, a real socket."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator import peers
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.sidecar import SidecarApp, SidecarServer
from tests._serve import serve_in_thread
from tests.support.fake_forge import FakeForge

from ._fakes import FakeClock, UnixConnection, seed_run, temp_store

# a "bottle": a child of ours whose own child (its agent) opens `n` connections one after the
# other, each asking once and keeping the connection (kept alive, it stays counted); it prints
# the status line of every answer, then the agent's pid, and waits for its stdin to close
HOLDER = r"""
import socket, subprocess, sys
AGENT = r'''
import socket, sys
path, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        s.sendall(b"GET /issues/1 HTTP/1.1\r\nAuthorization: Bearer tok-7\r\n\r\n")
    except BrokenPipeError:  # refused before it could ask: the 503 is there to read
        pass
    line = s.recv(4096).split(b"\r\n", 1)[0].decode()  # the status line comes first, whole
    held.append(s)
    print(line, flush=True)
import os
print(os.getpid(), flush=True)
sys.stdin.read()
'''
agent = subprocess.Popen([sys.executable, "-c", AGENT, *sys.argv[1:]], stdin=sys.stdin)
agent.wait()
"""


class PeersTest(unittest.TestCase):
    def test_a_descendant_is_counted_under_our_direct_child(self) -> None:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, "/nonexistent.sock", "0"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.stdout.close)
        self.addCleanup(holder.wait, 10)
        self.addCleanup(holder.stdin.close)
        agent_pid = int(holder.stdout.readline())
        self.assertEqual(peers.child_of_ours(agent_pid), holder.pid)
        self.assertEqual(peers.child_of_ours(holder.pid), holder.pid)
        self.assertIsNone(peers.child_of_ours(os.getpid()))  # not a child of its own
        self.assertIsNone(peers.child_of_ours(agent_pid, max_depth=1))  # too deep: no one
        self.assertIsNone(peers.parent_of(2 ** 22 + 7))  # beyond pid_max: gone


class PerBottleCapTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        store = temp_store(self)
        forge = FakeForge("acme", "widgets")
        seed_run(store, forge.add_issue("Fix", "", user="alice"), RunState.RUNNING,
                 run_token="tok-7", run_id=7)
        app = SidecarApp(store, lambda o, r: forge, self.dir / "queue", FakeClock().now,
                         lambda: 123)
        self.sock = str(self.dir / "s.sock")
        self.server = SidecarServer(Path(self.sock), app, max_connections=10, max_per_bottle=3)
        serve_in_thread(self, self.server)

    def bottle(self, n: int) -> list[str]:
        """A bottle whose agent opens `n` connections and keeps them; each answer's status."""
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, self.sock, str(n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(holder.stdout.close)
        self.addCleanup(holder.wait, 10)
        self.addCleanup(holder.stdin.close)
        answers = [holder.stdout.readline().strip() for _ in range(n)]
        holder.stdout.readline()  # its pid: all its connections are made
        return answers

    def test_one_bottle_gets_its_share_and_the_others_theirs(self) -> None:
        with self.assertLogs("bot_bottle.orchestrator.sidecar", "WARNING") as logs:
            flood = self.bottle(5)
        self.assertEqual(flood[:3], ["HTTP/1.1 200 OK"] * 3)
        self.assertEqual(flood[3:], ["HTTP/1.1 503 Service Unavailable"] * 2)
        self.assertIn("3 already open from", logs.output[0])
        self.assertEqual(self.bottle(3), ["HTTP/1.1 200 OK"] * 3)  # another: its own three
        # and the service itself (no bottle of ours: counted apart) is still served
        conn = UnixConnection(self.sock)
        self.addCleanup(conn.close)
        conn.request("GET", "/issues/1", headers={"Authorization": "Bearer tok-7"})
        self.assertEqual(conn.getresponse().status, 200)


if __name__ == "__main__":
    unittest.main()
