"""The watchdog with a fake clock: idle running runs are reported, others left alone."""

from __future__ import annotations

import threading
import unittest

from bot_bottle.orchestrator.model import RunState
from bot_bottle.orchestrator.watchdog import Watchdog

from ._fakes import FakeClock, seed_run, temp_store


class WatchdogTest(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = FakeClock(10_000.0)
        self.store = temp_store(self)
        self.expired: list[tuple[int, float]] = []
        self.dog = Watchdog(self.store, lambda r, idle: self.expired.append((r.id, idle)),
                            timeout=1800, clock=self.clock.now)

    def add_run(self, run_id: int, state: RunState, progress: float | None, updated: float) -> None:
        run = seed_run(self.store, run_id, state, now=updated, run_id=run_id,
                       last_progress_at=progress)
        self.assertEqual((run.updated_at, run.last_progress_at), (updated, progress))

    def test_running_run_without_progress_for_the_timeout_is_expired(self) -> None:
        self.add_run(1, RunState.RUNNING, progress=8_000.0, updated=9_999.0)
        self.add_run(2, RunState.RUNNING, progress=9_000.0, updated=9_000.0)
        self.assertEqual(self.dog.tick(self.clock.now()), [1])
        self.assertEqual(self.expired, [(1, 2000.0)])

    def test_updated_at_counts_when_there_was_no_progress_yet(self) -> None:
        self.add_run(3, RunState.RUNNING, progress=None, updated=8_200.0)
        self.assertEqual(self.dog.tick(self.clock.now()), [3])

    def test_runs_stuck_starting_or_resuming_are_expired_too(self) -> None:
        self.add_run(6, RunState.STARTING, progress=None, updated=1_000.0)
        self.add_run(7, RunState.RESUMING, progress=None, updated=1_000.0)
        self.assertEqual(sorted(self.dog.tick(self.clock.now())), [6, 7])

    def test_frozen_and_queued_runs_are_never_expired(self) -> None:
        self.add_run(4, RunState.FROZEN, progress=0.0, updated=0.0)
        self.add_run(5, RunState.QUEUED, progress=None, updated=0.0)
        self.clock.advance(100_000)
        self.assertEqual(self.dog.tick(self.clock.now()), [])

    def test_run_loop_stops_when_the_event_is_set(self) -> None:
        stop = threading.Event()
        stop.set()
        self.dog.run(stop, interval=0.01)
        self.assertEqual(self.expired, [])
        self.assertTrue(stop.is_set())

    def test_each_pass_of_the_loop_beats(self) -> None:
        stop, beats = threading.Event(), []
        self.dog.run(stop, interval=0.01, beat=lambda: (beats.append(self.clock.now()), stop.set()))
        self.assertEqual(beats, [self.clock.now()])


if __name__ == "__main__":
    unittest.main()
