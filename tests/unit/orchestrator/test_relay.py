"""The done relay: queue files become done events once, in name order, across restarts."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from bot_bottle.orchestrator.relay import Relay
from bot_bottle.orchestrator.sidecar import write_done_file

from ._fakes import FakeClock, temp_store


class RelayTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.queue = Path(tmp.name) / "queue"
        self.store = temp_store(self)
        self.wakes: list[int] = []
        self.relay = Relay(self.store, self.queue, lambda: self.wakes.append(1), FakeClock().now)

    def sources(self) -> list[str]:
        return [e.source for e in self.store.pending_done_events()]

    def test_files_are_recorded_in_name_order_then_deleted_and_the_orchestrator_woken(self) -> None:
        second = write_done_file(self.queue, 2, "blocked", "b", now_ns=200)
        first = write_done_file(self.queue, 1, "done", "a", now_ns=100)
        self.assertEqual(self.relay.tick(), 2)
        self.assertEqual(self.sources(), [first.name, second.name])
        self.assertEqual(self.store.relay_cursor("done"), second.name)
        self.assertEqual(list(self.queue.iterdir()), [])
        self.assertEqual(self.wakes, [1])

    def test_a_file_recorded_before_a_crash_is_not_recorded_twice(self) -> None:
        path = write_done_file(self.queue, 1, "done", "a", now_ns=100)
        self.store.record_done_event(path.name, 1, "done", "a", 0.0, "done", path.name)
        self.assertEqual(self.relay.tick(), 0)
        self.assertFalse(path.exists())
        self.assertEqual(len(self.sources()), 1)
        self.assertEqual(self.wakes, [])

    def test_unreadable_file_is_set_aside_not_fatal(self) -> None:
        self.queue.mkdir()
        (self.queue / "0001-x.json").write_text("{not json")
        write_done_file(self.queue, 1, "done", "a", now_ns=100)
        self.assertEqual(self.relay.tick(), 1)
        self.assertTrue((self.queue / "0001-x.bad").exists())


if __name__ == "__main__":
    unittest.main()
