"""The done relay: queue files become done events once, in name order, across restarts and
passes from several threads."""

from __future__ import annotations

import tempfile
import threading
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

    def test_passes_from_several_threads_record_each_file_once_and_never_fail(self) -> None:
        # the relay's loop and bottle workers (before deciding on an exit) tick at once
        for i in range(200):
            write_done_file(self.queue, i, "done", "x", now_ns=i)
        errors, counts = [], []

        def tick():
            try:
                counts.append(self.relay.tick())
            except Exception as exc:  # a file read by one pass and deleted by another
                errors.append(exc)
        threads = [threading.Thread(target=tick) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(sum(counts), 200)
        self.assertEqual(len(self.sources()), 200)
        self.assertEqual(list(self.queue.iterdir()), [])

    def test_unreadable_file_is_set_aside_not_fatal(self) -> None:
        self.queue.mkdir()
        (self.queue / "0001-x.json").write_text("{not json")
        write_done_file(self.queue, 1, "done", "a", now_ns=100)
        self.assertEqual(self.relay.tick(), 1)
        self.assertTrue((self.queue / "0001-x.bad").exists())


if __name__ == "__main__":
    unittest.main()
