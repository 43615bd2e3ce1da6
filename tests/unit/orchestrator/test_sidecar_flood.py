"""The audit's sidecar flood through the real `SidecarApp` and store: 500 calls with 60 KB
paths within a minute store at most `store_oplog.RATE_MAX` bounded entries, and the calls
over the rate do not move the run's progress (the watchdog still sees it go quiet)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator import store_oplog as O
from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.sidecar import SidecarApp
from tests.support.fake_forge import FakeForge

from ._fakes import FakeClock, seed_run, temp_store


class SidecarFloodTest(unittest.TestCase):
    def test_a_flood_of_long_paths_is_bounded_and_is_no_progress_past_the_rate(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        store = temp_store(self)
        run = seed_run(store, 1, RunState.RUNNING, run_token="tok-1")
        clock = FakeClock()
        app = SidecarApp(store, lambda o, r: FakeForge("acme", "widgets"),
                         Path(tmp.name) / "queue", clock.now, lambda: 1)
        start = clock.now()
        path = "/nope/" + "x" * 60_000
        for _ in range(500):
            self.assertEqual(app.handle("GET", path, "tok-1", b"")[0], 404)
            clock.advance(0.1)
        entries = [e for e in store.op_log(run.id) if e.kind.startswith("sidecar.")]
        self.assertEqual(len(entries), O.RATE_MAX)
        self.assertTrue(all(len(e.detail["path"]) < O.STRING_MAX + 30 for e in entries))
        # progress stopped at the last stored call, not the last call
        self.assertAlmostEqual(store.get_run(run.id).last_progress_at,
                               start + (O.RATE_MAX - 1) * 0.1, delta=1e-3)


if __name__ == "__main__":
    unittest.main()
