"""The bottle operations' worker pool (`bottle_ops.BottleOps`) on real threads: bounded,
one operation per run at a time and in order, retried with back-off that holds no worker,
each end reported once as a lifecycle event, and nothing left behind by `close`."""

from __future__ import annotations

import threading
import time
import unittest

from bot_bottle.orchestrator import lifecycle as L
from bot_bottle.orchestrator.bottle_ops import BottleOps


class PoolTest(unittest.TestCase):
    def make(self, size: int = 2, delays=(0.0, 0.0)) -> BottleOps:
        self.threads: list[threading.Thread] = []
        self.ends: list[tuple[int, object]] = []
        self.ended = threading.Condition()

        def spawn(fn) -> None:
            thread = threading.Thread(target=fn, daemon=True)
            self.threads.append(thread)
            thread.start()

        def on_done(run_id, event, settle) -> None:
            settle()
            with self.ended:
                self.ends.append((run_id, event))
                self.ended.notify_all()
        pool = BottleOps(size=size, spawn=spawn, on_done=on_done, delays=delays,
                         redact=lambda run_id, text: text.replace("s3cret", "***"))

        def cleanup() -> None:
            pool.close()
            self.assertTrue(pool.wait_idle(10), "operations left running")
            for thread in self.threads:
                thread.join(10)
            self.assertFalse(any(t.is_alive() for t in self.threads), "workers left behind")
        self.addCleanup(cleanup)
        return pool

    def wait_ends(self, count: int) -> list[tuple[int, object]]:
        with self.ended:
            self.assertTrue(self.ended.wait_for(lambda: len(self.ends) >= count, 10),
                            f"only {self.ends} ended")
            return list(self.ends)

    def test_at_most_size_operations_run_at_once_and_each_ends_once(self) -> None:
        pool = self.make(size=2)
        gate, lock = threading.Event(), threading.Lock()
        running, peak = [0], [0]

        def work() -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            gate.wait(10)
            with lock:
                running[0] -= 1
        for run_id in range(1, 6):
            pool.submit(run_id, L.Freeze(), work)
        deadline = time.monotonic() + 10
        while running[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(running[0], 2)
        gate.set()
        ends = self.wait_ends(5)
        self.assertEqual(sorted(r for r, _ in ends), [1, 2, 3, 4, 5])
        self.assertTrue(all(e == L.OpSucceeded(L.Freeze()) for _, e in ends))
        self.assertEqual(peak[0], 2)
        self.assertTrue(pool.wait_idle(10))

    def test_one_operation_per_run_at_a_time_in_order_while_other_runs_go_on(self) -> None:
        pool = self.make(size=3)
        first_in, release, order = threading.Event(), threading.Event(), []

        def hang() -> None:
            order.append("freeze")
            first_in.set()
            release.wait(10)
        pool.submit(1, L.Freeze(), hang)
        self.assertTrue(first_in.wait(10))
        pool.submit(1, L.DestroyBottle("a"), lambda: order.append("destroy"))
        pool.submit(2, L.Freeze(), lambda: order.append("other run"))
        self.assertEqual(self.wait_ends(1), [(2, L.OpSucceeded(L.Freeze()))])
        self.assertTrue(pool.under_way(1, L.Freeze))
        self.assertEqual(order, ["freeze", "other run"], "run 1's destroy waits for its freeze")
        release.set()
        self.wait_ends(3)
        self.assertEqual(order, ["freeze", "other run", "destroy"])
        self.assertFalse(pool.under_way(1, L.Freeze))

    def test_a_failing_operation_is_retried_then_reported_failed_with_its_redacted_error(
            self) -> None:
        pool = self.make()
        tries = []

        def fail() -> None:
            tries.append(1)
            raise RuntimeError(f"commit failed: token s3cret in /workspace/x (try {len(tries)})")
        pool.submit(7, L.Freeze(), fail)
        [(run_id, event)] = self.wait_ends(1)
        self.assertEqual(run_id, 7)
        self.assertEqual(event, L.OpFailed(L.Freeze(), "commit failed: token *** in "
                                                       "/workspace/x (try 3)", 3))
        self.assertEqual(len(tries), 3)

    def test_an_operation_that_succeeds_on_a_retry_reports_success_once(self) -> None:
        pool = self.make()
        tries = []

        def flaky() -> None:
            tries.append(1)
            if len(tries) < 2:
                raise OSError("busy")
        pool.submit(7, L.OpenPr(), flaky)
        self.assertEqual(self.wait_ends(1), [(7, L.OpSucceeded(L.OpenPr()))])
        self.assertEqual(len(tries), 2)

    def test_a_back_off_holds_no_worker_and_close_drops_the_retry(self) -> None:
        pool = self.make(size=1, delays=(3600.0,))
        done = threading.Event()

        def fail() -> None:
            raise OSError("no")
        pool.submit(1, L.Freeze(), fail)
        pool.submit(2, L.Freeze(), done.set)  # the only worker is free during run 1's wait
        self.assertTrue(done.wait(10))
        self.assertEqual(self.wait_ends(1), [(2, L.OpSucceeded(L.Freeze()))])
        self.assertTrue(pool.under_way(1, L.Freeze))
        self.assertFalse(pool.idle())
        pool.close()
        self.assertTrue(pool.wait_idle(10))
        self.assertFalse(pool.under_way(1, L.Freeze))

    def test_an_identical_operation_already_waiting_is_not_queued_twice(self) -> None:
        pool = self.make(size=1)
        first_in, release, calls = threading.Event(), threading.Event(), []

        def hang() -> None:
            first_in.set()
            release.wait(10)
        pool.submit(1, L.Freeze(), hang)
        self.assertTrue(first_in.wait(10))
        for _ in range(3):
            pool.submit(1, L.DestroyBottle("a"), lambda: calls.append("destroy"))
        release.set()
        self.wait_ends(2)
        self.assertTrue(pool.wait_idle(10))
        self.assertEqual(calls, ["destroy"])


if __name__ == "__main__":
    unittest.main()
