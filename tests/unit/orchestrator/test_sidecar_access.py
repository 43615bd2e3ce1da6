"""The sidecar's access lines name the run whose token made the request (over its real
socket), and `-` when no run answered to the token."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.sidecar import SidecarApp, SidecarServer
from tests.support.fake_forge import FakeForge
from tests._serve import serve_in_thread

from ._fakes import FakeClock, UnixConnection, seed_run, temp_store


class SidecarAccessLineTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        forge = FakeForge("acme", "widgets")
        self.issue = forge.add_issue("Fix empty input", "crashes", user="alice")
        store = temp_store(self)
        seed_run(store, self.issue, RunState.RUNNING, run_token="tok-7", run_id=7)
        app = SidecarApp(store, lambda o, r: forge, Path(tmp.name) / "queue", FakeClock().now,
                         lambda: 123)
        self.sock = str(Path(tmp.name) / "s.sock")
        server = SidecarServer(Path(self.sock), app)
        serve_in_thread(self, server)

    def access_line(self, token: str, path: str | None = None) -> str:
        conn = UnixConnection(self.sock)
        self.addCleanup(conn.close)
        with self.assertLogs("bot_bottle.orchestrator.sidecar", level="INFO") as logs:
            conn.request("GET", path or f"/issues/{self.issue}",
                         headers={"Authorization": f"Bearer {token}"})
            conn.getresponse().read()
        return logs.records[-1].getMessage()

    def test_an_access_line_carries_the_run_id(self) -> None:
        self.assertRegex(self.access_line("tok-7"),
                         rf'^sidecar run=7 GET /issues/{self.issue} 200 \d+B [0-9.]+ms$')

    def test_an_unknown_token_is_logged_without_a_run(self) -> None:
        self.assertRegex(self.access_line("nope"), r'^sidecar run=- GET /issues/\S+ 401 ')

    def test_a_long_path_is_cut_in_the_line(self) -> None:
        line = self.access_line("tok-7", "/issues/" + "9" * 60_000)
        self.assertRegex(line, r"^sidecar run=7 GET /issues/9+… 4[0-9][0-9] ")
        self.assertLess(len(line), 300)


if __name__ == "__main__":
    unittest.main()
